"""A corpus of bad records interleaved with good ones: each bad one in the DLQ, each good one
applied; then `laer dlq replay` sends a fixed one back."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from consumers import dlq_tools
from laer.local.kafka import LocalKafka
from laer.publish import Mode, encode
from laer_domain.events import make_event
from persistence.tables import AppliedEventRow
from tests.consumers.conftest import Harness

pytestmark = [pytest.mark.kafka]

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
STRUCTURED = [("content-type", b"application/cloudevents+json")]


def start(account: str, n: int = 0) -> dict[str, Any]:
    return make_event("laer.billing.subscription_started", account, T0 + timedelta(minutes=n), {
        "plan": "team", "seats": 10, "mrr": "750.00", "currency": "EUR",
        "term_start": "2026-03-02", "term_end": "2027-03-02"}, source="billing-system")


def usage(account: str, count: Any = 3, n: int = 0) -> dict[str, Any]:
    return make_event("laer.usage.active_users", account, T0 + timedelta(hours=1, minutes=n),
                      {"date": "2026-03-02", "count": count}, source="product")


def without(event: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k != name}


def structured(event: dict[str, Any], key: bytes | None = None
               ) -> tuple[bytes | None, bytes, list[tuple[str, bytes]]]:
    return (key if key is not None else str(event.get("subject", "x")).encode(),
            json.dumps(event).encode(), STRUCTURED)


def bad_corpus(topics: dict[str, str]) -> list[tuple[str, str, tuple[Any, ...]]]:
    """(kind, expected reason, (topic, key, value, headers))."""
    b, u = topics["billing"], topics["usage"]
    ok = start("bad-1")
    future = make_event("laer.billing.subscription_started", "bad-1",
                        datetime.now(UTC) + timedelta(days=3), dict(ok["data"]))
    long_subject = "a" * 129
    binary_key, binary_value, binary_headers = encode(usage("bad-2"), "binary")
    corpus: list[tuple[str, str, tuple[Any, ...]]] = [
        ("bad JSON", "invalid_json", (b, b"bad-1", b'{"id": "x", ', STRUCTURED)),
        ("non-object JSON", "schema_violation", (b, b"bad-1", b"[1, 2, 3]", STRUCTURED)),
        *[(f"missing {attr}", "missing_attribute", (b, *structured(without(ok, attr), b"bad-1")))
          for attr in ("specversion", "id", "source", "type", "subject", "time")],
        ("bad subject characters", "invalid_subject",
         (b, *structured({**ok, "subject": "bad subject!"}))),
        ("129-character subject", "invalid_subject",
         (b, *structured({**ok, "subject": long_subject}))),
        ("key differs from subject", "key_mismatch", (b, *structured(ok, b"someone-else"))),
        ("missing key", "key_mismatch", (b, None, json.dumps(ok).encode(), STRUCTURED)),
        ("unknown type", "unknown_type",
         (b, *structured({**ok, "type": "laer.billing.refund_issued"}))),
        ("type on the wrong topic", "wrong_topic", (b, *structured(usage("bad-1")))),
        ("negative count", "schema_violation", (u, *structured(usage("good-00", count=-1, n=99)))),
        ("string count", "schema_violation", (u, *structured(usage("bad-1", count="5")))),
        ("missing data field", "schema_violation", (b, *structured(
            make_event("laer.billing.invoice_paid", "bad-1", T0, {"currency": "EUR"})))),
        ("specversion 0.3", "schema_violation", (b, *structured({**ok, "specversion": "0.3"}))),
        ("unparseable time", "schema_violation", (b, *structured({**ok, "time": "yesterday"}))),
        ("oversized record", "oversized", (b, *structured(
            {**ok, "data": {**ok["data"], "padding": "x" * (300 * 1024)}}))),
        ("time more than a day ahead", "future_time", (b, *structured(future))),
        ("binary mode, bad data", "invalid_json",
         (u, binary_key, b"{{nope", binary_headers)),
        ("binary mode, no ce_type", "missing_attribute",
         (u, binary_key, binary_value, [h for h in binary_headers if h[0] != "ce_type"])),
        ("binary mode, XML content type", "unsupported_content_type",
         (u, binary_key, b"<count>3</count>",
          [h for h in binary_headers if h[0] != "content-type"]
          + [("content-type", b"application/xml")])),
        ("non-UTF-8 value", "invalid_encoding", (b, b"bad-1", b"\xff\xfe\x00{", STRUCTURED)),
        ("non-UTF-8 key", "invalid_encoding", (b, b"\xff\xfe", json.dumps(ok).encode(),
                                               STRUCTURED)),
        ("unsupported content type", "unsupported_content_type",
         (b, b"bad-1", json.dumps(ok).encode(), [("content-type", b"text/plain")])),
        ("tombstone", "empty_record", (b, b"bad-1", None, [])),
        *poison_corpus(topics),
    ]
    return corpus


def poison_corpus(topics: dict[str, str]) -> list[tuple[str, str, tuple[Any, ...]]]:
    """The records of issue 12 that used to stall their partition (each failed at the rules
    or at write time with an exception other than InvalidEvent)."""
    b, u, s = topics["billing"], topics["usage"], topics["support"]
    ok = start("bad-1")
    deep = "[" * 1000 + "]" * 1000
    body = json.dumps(ok)
    _, binary_value, binary_headers = encode(usage("bad-2"), "binary")

    def data(**changes: Any) -> tuple[Any, ...]:
        return (b, *structured({**ok, "data": {**ok["data"], **changes}}))

    escalation = make_event("laer.support.ticket_escalated", "good-00", T0, {"ticket_id": "t"})
    return [
        ("JSON nested 1,000 deep", "invalid_json",
         (b, b"bad-1", (body[:-1] + f', "x": {deep}}}').encode(), STRUCTURED)),
        ("binary mode, data nested 1,000 deep", "invalid_json",
         (u, b"bad-2", (binary_value[:-1].decode() + f', "x": {deep}}}').encode(),
          binary_headers)),
        ("integer literal over 4,300 digits", "invalid_json",
         (b, b"bad-1", (body[:-1] + ', "x": ' + "7" * 4301 + "}").encode(), STRUCTURED)),
        ("time before year 1 in UTC", "schema_violation",
         (b, *structured({**ok, "time": "0001-01-01T00:30:00+01:00"}))),
        ("time after year 9999 in UTC", "schema_violation",
         (b, *structured({**ok, "time": "9999-12-31T23:00:00-05:00"}))),
        ("term_start at the calendar's edge", "schema_violation",
         data(term_start="0001-01-01T00:30:00+01:00")),
        ("term_end 9999-12-31", "schema_violation", data(term_end="9999-12-31")),
        ("time zone naming a folder", "schema_violation",
         data(contacts=[{"email": "a@b.c", "timezone": "America"}])),
        ("time zone of 300 characters", "schema_violation",
         data(contacts=[{"email": "a@b.c", "timezone": "A" * 300}])),
        ("two e-mail addresses in one", "schema_violation",
         data(contacts=[{"email": "a@b.c, victim@x.com"}])),
        ("active_users dated year 1", "schema_violation", (u, *structured(make_event(
            "laer.usage.active_users", "good-00", T0, {"date": "0001-01-01", "count": 1})))),
        ("escalation in year 1", "schema_violation",
         (s, *structured({**escalation, "time": "0001-01-02T00:00:00Z"}))),
        ("id with a lone surrogate", "invalid_id", (b, *structured({**ok, "id": "x\ud800"}))),
        ("id with NUL", "invalid_id", (b, *structured({**ok, "id": "x\x00"}))),
        ("id of 257 characters", "invalid_id", (b, *structured({**ok, "id": "i" * 257}))),
        ("source with a lone surrogate", "invalid_source",
         (b, *structured({**ok, "source": "\udfff"}))),
        ("binary mode, source with NUL", "invalid_source",
         (u, b"bad-2", binary_value,
          [h for h in binary_headers if h[0] != "ce_source"] + [("ce_source", b"s\x00")])),
        ("source of 300 characters", "invalid_source",
         (b, *structured({**ok, "source": "s" * 300}))),
    ]


def test_bad_records_go_to_the_dlq_with_reasons_good_ones_apply(
        kafka_broker: LocalKafka, db_url: str, harness_factory: Any, tmp_path: Path) -> None:
    h: Harness = harness_factory(kafka_broker, db_url)
    proc = h.start()
    corpus = bad_corpus(h.topics)
    assert len({kind for kind, _, _ in corpus}) == len(corpus) >= 40
    good: list[dict[str, Any]] = []
    bad: dict[tuple[str, int, int], tuple[str, str, tuple[Any, ...]]] = {}
    for n, (kind, reason, (topic, key, value, headers)) in enumerate(corpus):
        account = f"good-{n:02d}"
        mode: Mode = "binary" if n % 2 else "structured"
        for event in (start(account, n), usage(account, n=n)):  # a good pair around each bad
            gk, gv, ghs = encode(event, mode)
            h.produce_raw(h.topics["billing" if "billing" in event["type"] else "usage"],
                          gk, gv, ghs)
            good.append(event)
        partition, offset = h.produce_raw(topic, key, value, headers)
        bad[(topic, partition, offset)] = (kind, reason, (topic, key, value, headers))
    h.wait_consumed(timeout=120)

    letters = {(e.source_topic, e.source_partition, e.source_offset): e
               for e in dlq_tools.read_dead_letters(h.settings().kafka)}
    missing = [bad[k][0] for k in bad if k not in letters]
    assert not missing, f"not in the DLQ: {missing}"
    assert set(letters) == set(bad), "the DLQ holds records that were good"
    wrong = [(bad[k][0], e.reason, bad[k][1]) for k, e in letters.items() if e.reason != bad[k][1]]
    assert not wrong, f"(kind, reason, expected): {wrong}"
    for k, e in letters.items():
        _, _, (_, key, value, headers) = bad[k]
        assert (e.key, e.value) == (key, value)  # the original record, untouched
        assert e.original_headers == list(headers)
        assert e.message
    with h.sessions() as s:
        applied = set(s.scalars(select(AppliedEventRow.event_id)))
    assert {e["id"] for e in good} <= applied

    # list --json, fix one record (the negative count), replay it: it is applied
    listed = dlq_tools.list_dead_letters(h.settings().kafka, reason="schema_violation")
    negative = next(d for d in listed if '"count": -1' in (d.get("value") or ""))
    fixed = dict(negative, value=negative["value"].replace('"count": -1', '"count": 1'))
    path = tmp_path / "fixed.jsonl"
    path.write_text(json.dumps(fixed) + "\n" + json.dumps(listed[0]) + "\n")
    report = dlq_tools.replay(h.settings().kafka, h.settings().consumer,
                              dlq_tools.replays_from_file(path))
    assert len(report.sent) == 1 and len(report.refused) == 1, report  # the unfixed one stays
    h.produced += 1
    h.wait_consumed(timeout=60)
    fixed_id = json.loads(fixed["value"])["id"]
    with h.sessions() as s:
        assert s.scalar(select(AppliedEventRow.id).where(AppliedEventRow.event_id == fixed_id))
    assert proc.alive()
