"""Poison values found from outside: each is bad input with a reason, never an exception of
another kind in decoding or, once accepted, in the rules (issue 12).

Times and dates must stay where the rules' arithmetic (term_end + grace, date - window, ...)
cannot leave the calendar; a contact's time zone must name a zone; `id` and `source` must be
storable text; a contact's e-mail must be exactly one address.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from event_inputs import started, with_attr, with_data

from laer_domain import make_event, parse_event
from laer_domain.events import InvalidEvent
from laer_domain.policy import Policy
from laer_domain.service import in_memory_service
from laer_domain.wire import EARLIEST_INSTANT, LATEST_INSTANT


def rejected(attrs: dict[str, Any]) -> InvalidEvent:
    with pytest.raises(InvalidEvent) as info:
        parse_event(attrs)
    return info.value


@pytest.mark.parametrize("time", [
    "0001-01-01T00:30:00+01:00",  # before year 1 once in UTC
    "9999-12-31T23:00:00-05:00",  # after year 9999 once in UTC
    "0001-01-01T00:00:00Z",       # representable, but the rules subtract days from it
    "9999-12-31",                 # representable, but the rules add days to it
])
def test_times_at_the_calendars_edge_are_schema_violations(time: str) -> None:
    assert rejected(with_attr(started(), time=time)).reason == "schema_violation"
    for field in ("term_start", "term_end"):
        other = "2025-01-01" if field == "term_end" else "9998-01-01"
        attrs = with_data(started(), **{field: time, ("term_start" if field == "term_end"
                                                      else "term_end"): other})
        error = rejected(attrs)
        assert error.reason == "schema_violation", error
        assert field in error.message


def test_a_term_ending_in_9999_and_a_usage_date_in_year_1_are_schema_violations() -> None:
    assert rejected(with_data(started(), term_end="9999-12-31")).reason == "schema_violation"
    usage = make_event("laer.usage.active_users", "acme", datetime(2025, 3, 1, tzinfo=UTC),
                       {"date": "0001-01-01", "count": 3})
    assert rejected(usage).reason == "schema_violation"
    canceled = make_event("laer.billing.subscription_canceled", "acme",
                          datetime(2025, 3, 1, tzinfo=UTC),
                          {"effective_at": "0001-01-01T00:00:00Z", "reason": "x"})
    assert rejected(canceled).reason == "schema_violation"


def test_the_widest_accepted_times_apply_without_error() -> None:
    """The bounds themselves are accepted, and the rules cope with them."""
    first = EARLIEST_INSTANT
    last = LATEST_INSTANT
    for start, end, at in [(first, first + timedelta(days=400), first),
                           (last - timedelta(days=400), last, last),
                           (first, last, first)]:
        service = in_memory_service(Policy())
        landing = parse_event(make_event("laer.billing.subscription_started", "acme", at, {
            "plan": "p", "seats": 1, "mrr": 1, "currency": "EUR",
            "term_start": start.isoformat(), "term_end": end.isoformat()}))
        service.handle(landing)
        for kind, data in [("laer.usage.active_users", {"date": at.isoformat(), "count": 1}),
                           ("laer.support.ticket_escalated", {"ticket_id": "t"}),
                           ("laer.usage.provisioned", {})]:
            service.handle(parse_event(make_event(kind, "acme", at, data)))
        service.sweep(last)


def test_an_escalation_in_year_1_is_rejected_before_the_rules_see_it() -> None:
    escalation = make_event("laer.support.ticket_escalated", "acme",
                            datetime(2025, 3, 1, tzinfo=UTC), {"ticket_id": "t"})
    assert rejected(with_attr(escalation, time="0001-01-02T00:00:00Z")).reason == \
        "schema_violation"


@pytest.mark.parametrize("zone", ["America", "Europe/", "A" * 300, "../etc/passwd", "Nowhere/X",
                                  "UTC\x00"])
def test_a_contact_time_zone_must_name_a_zone(zone: str) -> None:
    attrs = with_data(started(), contacts=[{"email": "a@b.c", "timezone": zone}])
    error = rejected(attrs)
    assert error.reason == "schema_violation"
    assert "timezone" in error.message


def test_real_time_zones_are_accepted() -> None:
    for zone in ("Europe/Paris", "America/Argentina/Buenos_Aires", "UTC"):
        parse_event(with_data(started(), contacts=[{"email": "a@b.c", "timezone": zone}]))


@pytest.mark.parametrize("attribute", ["id", "source"])
@pytest.mark.parametrize("value", ["\ud800", "a\udfffb", "a\x00b", "x" * 257, " "])
def test_id_and_source_must_be_storable_text(attribute: str, value: str) -> None:
    error = rejected(with_attr(started(), **{attribute: value}))
    assert error.reason in {f"invalid_{attribute}", "missing_attribute"}, error
    assert attribute in error.message


@pytest.mark.parametrize("attribute", ["id", "source"])
def test_id_and_source_may_be_256_characters_of_any_text(attribute: str) -> None:
    for value in ("x" * 256, "ünïcødé-☃-😀", "urn:uuid:0b6f/1?x=y"):
        assert getattr(parse_event(with_attr(started(), **{attribute: value})), attribute) == value


@pytest.mark.parametrize("email", [
    "a@b.c, victim@x.com", "a@b.c victim@x.com", "a@b.c;victim@x.com", "Ada <a@b.c>",
    "<a@b.c>", "a@b.c\nBcc: victim@x.com", "a@@b.c", "@b.c", "a@", "ab.c", "a@b.c\x00",
    "a" * 250 + "@b.cc",
])
def test_a_contact_email_must_be_exactly_one_address(email: str) -> None:
    error = rejected(with_data(started(), contacts=[{"email": email}]))
    assert error.reason == "schema_violation"
    assert "email" in error.message


def test_plain_addresses_are_accepted() -> None:
    for email in ("a@b.c", "first.last+tag@sub.example.com", "tenant@x", "o'neil@acme.test"):
        parse_event(with_data(started(), contacts=[{"email": email}]))


@pytest.mark.parametrize("field", ["plan", "currency"])
def test_payload_text_with_nul_is_a_schema_violation(field: str) -> None:
    assert rejected(with_data(started(), **{field: "EU\x00"})).reason == "schema_violation"


@pytest.mark.parametrize("value", [10**20, "1e999999", "-1e30"])
def test_money_beyond_any_plausible_amount_is_a_schema_violation(value: Any) -> None:
    assert rejected(with_data(started(), mrr=value)).reason == "schema_violation"


def test_counts_beyond_what_json_carries_exactly_are_schema_violations() -> None:
    assert rejected(with_data(started(), seats=2**53)).reason == "schema_violation"
    parse_event(with_data(started(), seats=2**53 - 1))
