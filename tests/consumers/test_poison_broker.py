"""Records the Kafka client cannot read or cannot copy whole: a real `laer consume` on a real
broker dead-letters each once and goes on (issue 12)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import select

from consumers import dlq_tools
from consumers.dlq import TRUNCATED
from laer.local.kafka import LocalKafka
from laer.publish import encode
from persistence.tables import AppliedEventRow
from tests.consumers.conftest import Harness
from tests.consumers.test_bad_input import STRUCTURED, start, usage

pytestmark = [pytest.mark.kafka]


class RawName(str):
    """A header name sent as `raw` bytes (kafka-python encodes names itself, as UTF-8)."""

    raw: bytes

    def __new__(cls, raw: bytes) -> RawName:
        name = super().__new__(cls, raw.decode("latin-1"))
        name.raw = raw
        return name

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return self.raw


def test_an_unreadable_record_and_one_too_large_to_copy_are_dead_lettered_once(
        kafka_broker: LocalKafka, db_url: str, harness_factory: Any) -> None:
    h: Harness = harness_factory(kafka_broker, db_url)
    proc = h.start()
    h.wait_assigned(proc)
    good = [start("p-1"), usage("p-1", n=1), start("p-2"), usage("p-2", n=2), usage("p-1", n=3)]
    billing, usage_topic = h.topics["billing"], h.topics["usage"]

    def send(event: dict[str, Any]) -> None:
        key, value, headers = encode(event)
        h.produce_raw(billing if "billing" in event["type"] else usage_topic, key, value,
                      headers)

    send(good[0])
    send(good[1])
    body = json.dumps(usage("p-1", n=9)).encode()
    corrupt = h.produce_raw(usage_topic, b"p-1", body,
                            [*STRUCTURED, (RawName(b"bad-\xff\xfe"), b"x")])
    send(good[2])
    # just under the broker's 1 MiB limit: with the error headers the copy no longer fits
    huge = h.produce_raw(billing, b"p-2", b"x" * 1_048_300, list(STRUCTURED))
    send(good[3])
    send(good[4])
    h.wait_consumed(timeout=120)

    letters = {(e.source_topic, e.source_partition, e.source_offset): e
               for e in dlq_tools.read_dead_letters(h.settings().kafka)}
    assert set(letters) == {(usage_topic, *corrupt), (billing, *huge)}
    unreadable = letters[(usage_topic, *corrupt)]
    assert unreadable.reason == "corrupt_record" and "cannot read" in unreadable.message
    too_large = letters[(billing, *huge)]
    assert too_large.reason == "oversized"
    assert dict(too_large.headers)[TRUNCATED].startswith(b"value cut from 1048300 to ")
    assert too_large.value is not None and 1_000_000 < len(too_large.value) < 1_048_300
    with h.sessions() as s:
        applied = set(s.scalars(select(AppliedEventRow.event_id)))
    assert {e["id"] for e in good} <= applied
    assert proc.alive(), proc.tail()
    assert h.close()["consume"] == 0
