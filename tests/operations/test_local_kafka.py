"""The local broker's cluster id: never one the storage tool would read as an option."""

from __future__ import annotations

import base64
import uuid

from laer.local.kafka import cluster_id


def test_a_cluster_id_starting_with_a_dash_is_drawn_again() -> None:
    dashed = uuid.UUID(bytes=b"\xf8" + bytes(15))  # URL-safe base64 "-AAAAAAAAAAAAAAAAAAAAA"
    plain = uuid.UUID(bytes=b"\x00" * 15 + b"\x01")
    assert base64.urlsafe_b64encode(dashed.bytes).decode().startswith("-")
    drawn = iter([dashed, plain])

    assert cluster_id(lambda: next(drawn)) == "AAAAAAAAAAAAAAAAAAAAAQ"


def test_a_cluster_id_is_22_url_safe_characters() -> None:
    for _ in range(200):
        cid = cluster_id()
        assert len(cid) == 22 and not cid.startswith("-")
        assert uuid.UUID(bytes=base64.urlsafe_b64decode(cid + "==")).version == 4
