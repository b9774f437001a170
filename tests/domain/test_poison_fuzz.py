"""Fuzz of validation and rules with hostile values: an event is either bad input (InvalidEvent)
or it applies, and what it produces serialises, whatever its fields hold (issue 12).

Every field of every event type, and the envelope, draws from valid values mixed with the
poison classes of the issue (calendar edges, odd zones, surrogates, NUL, oversize, huge
numbers, lists of addresses) and arbitrary JSON. An accepted event is applied as a landing
and to a landed account, the account is swept years ahead, and the states, events and
signals are serialised as the batch store writes them. Many examples, no services.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import available_timezones

import hypothesis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from laer_domain import make_event, parse_event
from laer_domain.events import EVENT_DATA_MODELS, CloudEvent, InvalidEvent
from laer_domain.policy import Policy
from laer_domain.service import InMemoryRepository, LifecycleService
from laer_domain.wire import LATEST_INSTANT

T0 = datetime(2026, 3, 2, 9, tzinfo=UTC)
POLICY = Policy()

ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=40)
TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"),
               min_size=1, max_size=40)  # what valid text may hold: anything storable
EDGE_TIMES = ["0001-01-01T00:30:00+01:00", "9999-12-31T23:00:00-05:00", "0001-01-01",
              "9999-12-31", "0001-12-31T23:59:59Z", "9999-01-01T00:00:00Z", "2026-02-30",
              "2026-03-02T25:00:00Z", "2026-03-02T10:00:00", "2026-03-02T10:00:00+24:00",
              "+2026-03-02", "0000-01-01", "99999-01-01"]
ODD_ZONES = ["America", "Europe/", "A" * 300, "../etc/passwd", "", "UTC\x00", "Etc",
             "zone.tab", "tzdata.zi", "/UTC", "Nowhere/Else"]
ODD_EMAILS = ["a@b.c, victim@x.com", "Ada <a@b.c>", "a@b.c\r\nBcc: x@y.z", "@", "a@",
              "x" * 300 + "@b.c", "a@-b.c", "a@b.c\x00", "a b@c.d"]
HUGE = st.sampled_from([2**53, 10**18, 10**4000, -1, "1e999999", "NaN", "1e18", "-1e30",
                        "999999999999999999.9", 1e308, float("inf")])
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | ANY_TEXT,
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(ANY_TEXT, inner, max_size=3), max_leaves=8)
HOSTILE = st.one_of(ANY_TEXT, HUGE, st.sampled_from(EDGE_TIMES), JSON,
                    st.sampled_from(ODD_ZONES + ODD_EMAILS), st.just("x" * 300))
FIRST, LAST = datetime(2, 1, 2, tzinfo=UTC), datetime(9998, 12, 30, tzinfo=UTC)
INSTANTS = st.one_of(
    st.datetimes(FIRST.replace(tzinfo=None), LAST.replace(tzinfo=None)).map(
        lambda d: d.replace(tzinfo=UTC)),
    st.sampled_from([FIRST, LAST, T0]),
    st.integers(-400, 400).map(lambda n: T0 + timedelta(days=n)),
)
OFFSETS = st.sampled_from([0, 60, -300, 14 * 60, -12 * 60])


def _wire_time(at: datetime, minutes: int) -> str:
    """`at` written in another offset when it stays on the calendar there."""
    zone = timezone(timedelta(minutes=minutes))
    try:
        return at.astimezone(zone).isoformat()
    except OverflowError:
        return at.isoformat()


TIMES = st.builds(_wire_time, INSTANTS, OFFSETS)
ZONES = st.sampled_from(sorted(available_timezones())[::7] + ["UTC"])
AMOUNTS = st.integers(0, 10**12) | st.decimals(0, 10**15, places=2).map(str)
COUNTS = st.integers(0, 2**53 - 1) | st.integers(0, 60)


@st.composite
def _term(draw: st.DrawFn) -> dict[str, Any]:
    start = draw(INSTANTS)
    end = start + min(timedelta(days=draw(st.integers(1, 40_000))), LAST - start)
    if end <= start:
        start = end - timedelta(days=1)
    return {"term_start": start.isoformat(), "term_end": end.isoformat()}


CONTACT = st.fixed_dictionaries(
    {"email": st.emails()}, optional={"name": TEXT, "role": TEXT, "timezone": ZONES,
                                      "channels": st.lists(TEXT, max_size=2),
                                      "opted_out": st.booleans()})
GOALS = st.none() | st.lists(st.fixed_dictionaries({"key": TEXT, "target": AMOUNTS}),
                             max_size=3)
PLAUSIBLE: dict[str, st.SearchStrategy[Any]] = {
    "effective_at": TIMES, "date": TIMES, "seats": COUNTS, "count": COUNTS, "used": COUNTS,
    "allowed": COUNTS, "attempt": COUNTS, "mrr": AMOUNTS, "amount": AMOUNTS, "value": AMOUNTS,
    "currency": st.sampled_from(["EUR", "usd", "JPY"]),
    "priority": st.sampled_from(["low", "normal", "high", "urgent"]),
    "kind": st.just("nps"), "score": st.integers(0, 10), "reason": TEXT | st.just(""),
    "contacts": st.lists(CONTACT, max_size=2), "goals": GOALS,
}


def _data(event_type: str) -> st.SearchStrategy[dict[str, Any]]:
    names = [n for n in EVENT_DATA_MODELS[event_type].model_fields
             if n not in ("term_start", "term_end")]
    fields = st.fixed_dictionaries({n: PLAUSIBLE.get(n, TEXT) for n in names})
    if "term_start" in EVENT_DATA_MODELS[event_type].model_fields:
        return st.tuples(fields, _term()).map(lambda pair: {**pair[0], **pair[1]})
    return fields


@st.composite
def _events(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event of any type, then up to two fields spoilt (data or envelope)."""
    event_type = draw(st.sampled_from(sorted(EVENT_DATA_MODELS)))
    fields = {"type": event_type, "data": draw(_data(event_type)), "time": draw(TIMES),
              "id": draw(TEXT), "source": draw(TEXT)}
    if draw(st.booleans()):
        fields["data"]["extra"] = draw(JSON)  # ignored by the tolerant reader
    names = [*fields["data"], "time", "id", "source"]
    for name, value in draw(st.lists(st.tuples(st.sampled_from(names), HOSTILE), max_size=2)):
        if name in fields["data"]:
            fields["data"][name] = value
        else:
            fields[name] = value
    return fields


EVENTS = _events()


def landing(at: datetime) -> CloudEvent:
    start = min(at, LATEST_INSTANT - timedelta(days=2))
    return parse_event(make_event("laer.billing.subscription_started", "acme", start, {
        "plan": "p", "seats": 10, "mrr": 100, "currency": "EUR", "term_start": start,
        "term_end": min(start + timedelta(days=365), LATEST_INSTANT)}, id="landing"))


def serialise(repo: InMemoryRepository) -> None:
    """What the batch store writes, serialised the same way (pydantic's JSON)."""
    for account in repo.accounts.values():
        type(account).model_validate_json(account.model_dump_json())
    for _, event in repo.events:
        CloudEvent.model_validate(json.loads(event.model_dump_json()))
    for signal in repo.signals:
        json.dumps(signal.evidence.model_dump(mode="json"))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(EVENTS)
@example({"type": "laer.support.ticket_escalated", "data": {"ticket_id": "t"},
          "time": "0001-01-02T00:00:00Z", "id": "e", "source": "s"})
@example({"type": "laer.billing.subscription_started", "time": "2026-03-02", "id": "e",
          "source": "s", "data": {"plan": "p", "seats": 1, "mrr": 1, "currency": "EUR",
                                  "term_start": "2026-03-02", "term_end": "9999-12-31",
                                  "contacts": [{"email": "a@b.c", "timezone": "America"}]}})
@example({"type": "laer.usage.active_users", "time": "2026-03-02", "id": "\ud800",
          "source": "s\x00", "data": {"date": "0001-01-01", "count": 1}})
def test_an_event_is_bad_input_or_it_applies(fields: dict[str, Any]) -> None:
    attrs = make_event(fields["type"], "acme", T0, {}, id="x")
    attrs.update(fields)
    try:
        event = parse_event(attrs)
    except InvalidEvent as exc:
        assert exc.reason and exc.message
        hypothesis.event(exc.reason)
        return
    hypothesis.event("accepted")
    repo = InMemoryRepository()
    service = LifecycleService(repo, POLICY)
    if event.type != "laer.billing.subscription_started":
        service.handle(event)  # parked: its account has not landed
        service.handle(landing(event.time))  # lands, and applies it
    else:
        service.handle(event)
        service.handle(landing(event.time))  # a win-back or a second landing
    last = max(a.clock for a in repo.accounts.values())
    service.sweep(last + min(timedelta(days=800), LATEST_INSTANT - last))
    serialise(repo)
