"""Validation of incoming events: every reason code and a table of bad inputs."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from event_inputs import NOW, active, base, drop_data, started, with_attr, with_data, without

from laer_domain import InvalidEvent, make_event, parse_event

BAD_INPUTS: list[tuple[str, dict[str, Any], str]] = [
    ("unknown type", with_attr(base(), type="laer.billing.refund_issued"), "unknown_type"),
    ("type outside laer", with_attr(base(), type="com.example.thing"), "unknown_type"),
    ("space in subject", with_attr(base(), subject="acme corp"), "invalid_subject"),
    ("slash in subject", with_attr(base(), subject="acme/eu"), "invalid_subject"),
    ("129-char subject", with_attr(base(), subject="a" * 129), "invalid_subject"),
    ("non-ascii subject", with_attr(base(), subject="acmé"), "invalid_subject"),
    ("empty subject", with_attr(base(), subject=""), "invalid_subject"),
    ("subject ending in a newline", with_attr(base(), subject="acme\n"), "invalid_subject"),
    ("empty id", with_attr(base(), id=""), "missing_attribute"),
    ("missing time", without(base(), "time"), "missing_attribute"),
    ("missing id", without(base(), "id"), "missing_attribute"),
    ("missing source", without(base(), "source"), "missing_attribute"),
    ("missing type", without(base(), "type"), "missing_attribute"),
    ("missing subject", without(base(), "subject"), "missing_attribute"),
    ("missing specversion", without(base(), "specversion"), "missing_attribute"),
    ("specversion 0.3", with_attr(base(), specversion="0.3"), "schema_violation"),
    ("numeric id", with_attr(base(), id=42), "schema_violation"),
    ("time not RFC 3339", with_attr(base(), time="01/03/2025"), "schema_violation"),
    ("time without offset", with_attr(base(), time="2025-03-01T10:00:00"), "schema_violation"),
    ("time as number", with_attr(base(), time=1735689600), "schema_violation"),
    ("data not an object", with_attr(base(), data=[1, 2]), "schema_violation"),
    ("negative count", active(-1), "schema_violation"),
    ("string count", active("abc"), "schema_violation"),
    ("numeric string count", active("5"), "schema_violation"),
    ("float count", active(2.5), "schema_violation"),
    ("boolean count", active(True), "schema_violation"),
    ("bad date", active(3, date="2025-02-30"), "schema_violation"),
    ("missing invoice_id", drop_data(base(), "invoice_id"), "schema_violation"),
    ("money not a number", with_data(base(), amount="ten"), "schema_violation"),
    ("negative money", with_data(base(), amount="-1"), "schema_violation"),
    ("NaN money", with_data(base(), amount="NaN"), "schema_violation"),
    ("bad currency", with_data(base(), currency="EURO"), "schema_violation"),
    (
        "unknown priority",
        make_event("laer.support.ticket_opened", "acme", NOW, {"ticket_id": "t", "priority": "p1"}),
        "schema_violation",
    ),
    (
        "nps out of scale",
        make_event("laer.support.survey_response", "acme", NOW, {"kind": "nps", "score": 11}),
        "schema_violation",
    ),
    (
        "unknown survey kind",
        make_event("laer.support.survey_response", "acme", NOW, {"kind": "ces", "score": 3}),
        "schema_violation",
    ),
    ("term ends before it starts", started(term_end="2024-01-01"), "schema_violation"),
    ("bad goal target", started(goals=[{"key": "g", "target": "lots"}]), "schema_violation"),
    (
        "unknown time zone",
        started(
            contacts=[
                {
                    "email": "a@b.c",
                    "name": "A",
                    "role": "buyer",
                    "channels": ["email"],
                    "timezone": "Mars/Olympus",
                }
            ]
        ),
        "schema_violation",
    ),
    ("seats as string", started(seats="10"), "schema_violation"),
]


@pytest.mark.parametrize(
    ("attrs", "reason"),
    [pytest.param(a, r, id=name) for name, a, r in BAD_INPUTS],
)
def test_bad_input_is_rejected_with_reason(attrs: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidEvent) as err:
        parse_event(attrs, now=NOW)
    assert err.value.reason == reason
    assert err.value.message


def test_table_is_large_enough() -> None:
    assert len(BAD_INPUTS) >= 20


def test_schema_violation_message_names_the_field() -> None:
    with pytest.raises(InvalidEvent) as err:
        parse_event(active("abc"))
    assert "data.count" in err.value.message
    with pytest.raises(InvalidEvent) as err:
        parse_event(drop_data(base(), "invoice_id"))
    assert "invoice_id" in err.value.message


def test_future_time() -> None:
    late = with_attr(base(), time=(NOW + timedelta(days=1, seconds=1)).isoformat())
    with pytest.raises(InvalidEvent) as err:
        parse_event(late, now=NOW)
    assert err.value.reason == "future_time"
    ok = with_attr(base(), time=(NOW + timedelta(hours=23)).isoformat())
    assert parse_event(ok, now=NOW).time == NOW + timedelta(hours=23)
    assert parse_event(late).time > NOW  # no clock given: no future check
    with pytest.raises(InvalidEvent):
        parse_event(ok, now=NOW, max_future=timedelta(hours=1))


def test_wrong_topic() -> None:
    with pytest.raises(InvalidEvent) as err:
        parse_event(base(), topic_family="usage")
    assert err.value.reason == "wrong_topic"
    assert parse_event(base(), topic_family="billing").type == "laer.billing.invoice_paid"


def test_key_mismatch() -> None:
    with pytest.raises(InvalidEvent) as err:
        parse_event(base(), record_key="other")
    assert err.value.reason == "key_mismatch"
    assert parse_event(base(), record_key="acme").account_id == "acme"


def test_invalid_event_is_a_value_error() -> None:
    err = InvalidEvent("unknown_type", "type: nope")
    assert isinstance(err, ValueError)
    assert (err.reason, err.message) == ("unknown_type", "type: nope")
