"""A grammar of hostile Kafka records mixed with good events, for the fuzz tests (issue 12).

Good events: a few accounts, each a landing and some later events, in either binding mode.
Bad records: one fault each, drawn from the classes the issue lists (deep nesting, huge
numbers, calendar edges, odd zones, surrogates, NUL, oversize, non-UTF-8 header names and
values, wrong topic, key mismatch, binary-mode oddities, lists of addresses), each with the
dead-letter reason it must get. The whole batch comes shuffled: topics interleave freely.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from laer.publish import Mode, encode
from laer_domain.events import event_family, make_event

T0 = datetime(2026, 3, 2, 9, tzinfo=UTC)
STRUCTURED = ("content-type", b"application/cloudevents+json")
FAMILIES = ("billing", "usage", "support")
EDGES = ["0001-01-01T00:30:00+01:00", "9999-12-31T23:00:00-05:00", "0001-01-01", "9999-12-31",
         "0001-06-01T00:00:00Z", "9999-01-01T00:00:00Z"]
ODD_ZONES = ["America", "Europe", "Etc/", "../etc/passwd", "Nowhere/Else"]
LISTS = ["a@b.c, victim@x.com", "a@b.c victim@x.com", "Ada <a@b.c>", "a@b.c;v@x.com"]


class RawName(str):
    """A header name sent as `raw` bytes (kafka-python encodes names itself, as UTF-8)."""

    raw: bytes

    def __new__(cls, raw: bytes) -> RawName:
        name = super().__new__(cls, raw.decode("latin-1"))
        name.raw = raw
        return name

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return self.raw


@dataclass(frozen=True)
class Sample:
    """One record to send: where, what, and what must become of it."""

    family: str
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    reason: str | None  # the dead-letter reason it must get; None: a good event
    kind: str  # the fault (or "good"), for messages
    event_id: str = ""  # a good event's id, which must be applied

    @property
    def bad(self) -> bool:
        return self.reason is not None


def landing_event(account: str, at: datetime, **data: Any) -> dict[str, Any]:
    """A subscription_started landing `account` at `at` for a year."""
    return make_event("laer.billing.subscription_started", account, at, {
        "plan": "team", "seats": 10, "mrr": "750.00", "currency": "EUR",
        "term_start": at.date().isoformat(),
        "term_end": (at + timedelta(days=365)).date().isoformat(), **data},
        source="billing-system")


FOLLOW_UPS: list[tuple[str, dict[str, Any]]] = [
    ("laer.usage.provisioned", {}),
    ("laer.usage.active_users", {"date": "2026-03-03", "count": 4}),
    ("laer.usage.feature_used", {"feature": "reports", "count": 2}),
    ("laer.billing.invoice_paid", {"invoice_id": "inv-1", "amount": 750, "currency": "EUR"}),
    ("laer.support.ticket_opened", {"ticket_id": "t-1", "priority": "high"}),
    ("laer.support.ticket_escalated", {"ticket_id": "t-1"}),
    ("laer.support.survey_response", {"kind": "nps", "score": 9}),
]


def sample_of(event: dict[str, Any], mode: Mode, reason: str | None = None,
            kind: str = "good") -> Sample:
    """The record of a wire-shaped event (good unless a `reason` is given)."""
    key, value, headers = encode(event, mode)
    return Sample(event_family(event["type"]), key, value, tuple(headers), reason, kind,
                  event["id"] if reason is None else "")


def _with_value(sample: Sample, value: bytes | None, kind: str, reason: str) -> Sample:
    return Sample(sample.family, sample.key, value, sample.headers, reason, kind)


@st.composite
def good_events(draw: st.DrawFn, prefix: str) -> list[Sample]:
    """1-3 accounts: a landing and 0-4 later events each, in random binding modes."""
    samples = []
    for n in range(draw(st.integers(1, 3))):
        account = f"{prefix}-{n}"
        at = T0 + timedelta(minutes=draw(st.integers(0, 600)))
        samples.append(sample_of(landing_event(account, at), draw(st.sampled_from(["structured",
                                                                            "binary"]))))
        for i, (kind, data) in enumerate(draw(st.lists(st.sampled_from(FOLLOW_UPS),
                                                        max_size=4, unique_by=lambda f: f[0]))):
            event = make_event(kind, account, at + timedelta(hours=i + 1), data,
                               source={"billing": "billing-system", "usage": "product",
                                       "support": "helpdesk"}[event_family(kind)])
            samples.append(sample_of(event, draw(st.sampled_from(["structured", "binary"]))))
    return samples


def _spoilt(event: dict[str, Any], mode: Mode, kind: str, reason: str, **changes: Any) -> Sample:
    return sample_of({**event, **changes}, mode, reason, kind)


@st.composite
def bad_record(draw: st.DrawFn, account: str, broker: bool) -> Sample:
    """One record with one fault, for `account`; `broker`: faults only a broker can carry."""
    at = T0 + timedelta(hours=draw(st.integers(0, 48)))
    landing = landing_event(account, at)
    usage = make_event("laer.usage.active_users", account, at, {"date": "2026-03-02",
                                                                 "count": 3})
    mode: Mode = draw(st.sampled_from(["structured", "binary"]))
    base = draw(st.sampled_from([landing, usage]))
    kinds = ["deep", "huge_int", "edge_time", "edge_term", "edge_date", "zone", "email",
             "nul_id", "long_id", "long_source", "surrogate", "oversized", "header_value",
             "wrong_topic", "key_mismatch", "no_key", "unknown_type", "not_object",
             "xml", "specversion", "tombstone", "money", "count"]
    if broker:
        kinds.append("header_name")
    kind = draw(st.sampled_from(kinds))
    if kind == "deep":
        depth = draw(st.integers(1_000, 3_000))
        sample = sample_of(base, mode)
        value = (sample.value or b"{}")[:-1] + (', "x": ' + "[" * depth + "]" * depth
                                                + "}").encode()
        return _with_value(sample, value, f"deep-{mode}", "invalid_json")
    if kind == "huge_int":
        digits = "7" * draw(st.integers(4_301, 6_000))
        sample = sample_of(base, mode)
        value = (sample.value or b"{}")[:-1] + (', "x": ' + digits + "}").encode()
        return _with_value(sample, value, f"huge_int-{mode}", "invalid_json")
    if kind == "edge_time":
        return _spoilt(base, mode, kind, "schema_violation", time=draw(st.sampled_from(EDGES)))
    if kind == "edge_term":
        field = draw(st.sampled_from(["term_start", "term_end"]))
        data = {**landing["data"], field: draw(st.sampled_from(EDGES))}
        return _spoilt(landing, mode, kind, "schema_violation", data=data)
    if kind == "edge_date":
        return _spoilt(usage, mode, kind, "schema_violation",
                       data={**usage["data"], "date": draw(st.sampled_from(EDGES))})
    if kind == "zone":
        zone = draw(st.sampled_from(ODD_ZONES) | st.integers(256, 400).map(lambda n: "Z" * n))
        return _spoilt(landing, mode, kind, "schema_violation", data={
            **landing["data"], "contacts": [{"email": "a@b.c", "timezone": zone}]})
    if kind == "email":
        return _spoilt(landing, mode, kind, "schema_violation", data={
            **landing["data"], "contacts": [{"email": draw(st.sampled_from(LISTS))}]})
    if kind in ("nul_id", "long_id", "long_source"):
        attr = "source" if kind == "long_source" else draw(st.sampled_from(["id", "source"]))
        value = ("a\x00b" if kind == "nul_id"
                 else "x" * draw(st.integers(257, 400)))
        return _spoilt(base, mode, f"{kind}-{attr}", f"invalid_{attr}", **{attr: value})
    if kind == "surrogate":  # JSON escapes carry it; UTF-8 headers cannot
        attr = draw(st.sampled_from(["id", "source"]))
        return _spoilt(base, "structured", f"surrogate-{attr}", f"invalid_{attr}",
                       **{attr: draw(st.sampled_from(["\ud800", "x\udfff", "\udbff\ud800"]))})
    if kind == "oversized":
        return _spoilt(base, mode, kind, "oversized", data={
            **base["data"], "padding": "p" * draw(st.integers(262_144, 300_000))})
    if kind == "header_value":
        sample = sample_of(base, mode)
        name = "ce_time" if mode == "binary" else "content-type"
        headers = tuple((k, b"\xff\xfe" if k == name else v) for k, v in sample.headers)
        return Sample(sample.family, sample.key, sample.value, headers, "invalid_encoding",
                      f"header_value-{mode}")
    if kind == "header_name":
        sample = sample_of(base, mode)
        headers = (*sample.headers, (RawName(b"x-\xff\xfe"), b"v"))
        return Sample(sample.family, sample.key, sample.value, headers, "corrupt_record", kind)
    if kind == "wrong_topic":
        sample = sample_of(base, mode)
        other = draw(st.sampled_from([f for f in FAMILIES if f != sample.family]))
        return Sample(other, sample.key, sample.value, sample.headers, "wrong_topic", kind)
    if kind in ("key_mismatch", "no_key"):
        sample = sample_of(base, mode)
        key = None if kind == "no_key" else b"someone-else"
        return Sample(sample.family, key, sample.value, sample.headers, "key_mismatch", kind)
    if kind == "unknown_type":
        return _spoilt(usage, mode, kind, "unknown_type", type="laer.usage.teleported")
    if kind == "not_object":
        sample = sample_of(usage, "binary")
        return _with_value(sample, draw(st.sampled_from([b"[1, 2]", b"3", b'"x"'])),
                           kind, "schema_violation")
    if kind == "xml":
        sample = sample_of(usage, "binary")
        headers = tuple((k, b"application/xml" if k == "content-type" else v)
                        for k, v in sample.headers)
        return Sample(sample.family, sample.key, b"<count>3</count>", headers,
                      "unsupported_content_type", kind)
    if kind == "specversion":
        return _spoilt(base, mode, kind, "schema_violation", specversion="0.3")
    if kind == "tombstone":
        return _with_value(sample_of(base, mode), None, f"tombstone-{mode}", "empty_record")
    if kind == "money":
        return _spoilt(landing, mode, kind, "schema_violation", data={
            **landing["data"], "mrr": draw(st.sampled_from(["1e999999", 10**19, "-5"]))})
    assert kind == "count"
    return _spoilt(usage, mode, kind, "schema_violation",
                   data={**usage["data"], "count": draw(st.sampled_from([2**53, 10**30, -1]))})


@st.composite
def mixed_batch(draw: st.DrawFn, prefix: str, broker: bool = False,
                max_bad: int = 12) -> list[Sample]:
    """Good events and bad records for accounts `prefix-N`, shuffled."""
    good = draw(good_events(prefix))
    accounts = sorted({s.key.decode() for s in good if s.key})
    bad = draw(st.lists(st.sampled_from(accounts).flatmap(
        lambda a: bad_record(a, broker)), min_size=1, max_size=max_bad))
    return list(draw(st.permutations(good + bad)))


def describe(samples: list[Sample]) -> str:
    """The batch in a line per record, for a failing example's message."""
    return "\n".join(f"{s.kind:>16} {s.family:<8} {s.reason or '-':<24} "
                     f"{json.dumps((s.value or b'')[:80].decode('utf-8', 'replace'))}"
                     for s in samples)
