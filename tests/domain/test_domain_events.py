"""Validation of incoming events: every reason code and a table of bad inputs."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from laer_domain import (
    EVENT_DATA_MODELS,
    CloudEvent,
    InvalidEvent,
    event_family,
    event_json_schemas,
    make_event,
    parse_event,
)
from laer_domain.payloads import ActiveUsers, InvoicePaid, SubscriptionStarted

NOW = datetime(2025, 3, 1, 12, tzinfo=UTC)


def base(kind: str = "billing.invoice_paid", **data: Any) -> dict[str, Any]:
    payload = {"invoice_id": "inv-1", "amount": "10.00", "currency": "EUR"}
    payload.update(data)
    return make_event(f"laer.{kind}", "acme", NOW, payload, id="e1")


def started(**data: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "plan": "pro",
        "seats": 10,
        "mrr": 100,
        "currency": "EUR",
        "term_start": "2025-01-01",
        "term_end": "2026-01-01T00:00:00Z",
    }
    payload.update(data)
    return make_event("laer.billing.subscription_started", "acme", NOW, payload, id="s1")


def without(attrs: dict[str, Any], name: str) -> dict[str, Any]:
    out = dict(attrs)
    del out[name]
    return out


def with_attr(attrs: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**attrs, **changes}


def with_data(attrs: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(attrs)
    out["data"].update(changes)
    return out


def drop_data(attrs: dict[str, Any], name: str) -> dict[str, Any]:
    out = copy.deepcopy(attrs)
    del out["data"][name]
    return out


def active(count: Any, date: Any = "2025-02-28") -> dict[str, Any]:
    return make_event(
        "laer.usage.active_users", "acme", NOW, {"date": date, "count": count}, id="a1"
    )


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


def test_plain_date_means_midnight_utc() -> None:
    event = parse_event(active(3, date="2025-02-28"))
    data = event.payload(ActiveUsers)
    assert data.date == datetime(2025, 2, 28, tzinfo=UTC)
    assert parse_event(with_attr(base(), time="2025-03-01")).time == datetime(
        2025, 3, 1, tzinfo=UTC
    )


def test_offsets_are_normalised_to_utc() -> None:
    event = parse_event(with_attr(base(), time="2025-03-01T14:00:00+02:00"))
    assert event.time == datetime(2025, 3, 1, 12, tzinfo=UTC)
    assert event.time.utcoffset() == timedelta(0)


def test_money_accepts_number_and_decimal_string() -> None:
    as_string = parse_event(with_data(base(), amount="1234.50")).payload(InvoicePaid)
    as_number = parse_event(with_data(base(), amount=1234.5)).payload(InvoicePaid)
    as_int = parse_event(with_data(base(), amount=1234)).payload(InvoicePaid)
    assert as_string.amount == Decimal("1234.50")
    assert as_number.amount == Decimal("1234.5")
    assert as_int.amount == Decimal(1234)
    assert isinstance(as_number.amount, Decimal)
    assert parse_event(with_data(base(), amount=0.1)).payload(InvoicePaid).amount == Decimal("0.1")


def test_currency_is_upper_cased() -> None:
    assert parse_event(with_data(base(), currency="eur")).payload(InvoicePaid).currency == "EUR"


def test_unknown_fields_are_ignored() -> None:
    event = parse_event(with_data(base(), discount="5%", nested={"x": 1}))
    assert not hasattr(event.data, "discount")
    extra_attr = with_attr(base(), traceparent="00-abc", partitionkey="acme")
    assert parse_event(extra_attr).id == "e1"


def test_subject_boundaries() -> None:
    for subject in ("a", "a" * 128, "Acme_Corp-01.eu:tenant@x"):
        assert parse_event(with_attr(base(), subject=subject)).account_id == subject


def test_subscription_started_full_payload() -> None:
    attrs = started(
        goals=[{"key": "tickets_closed", "target": "100"}],
        contacts=[
            {
                "email": "buyer@acme.test",
                "name": "Bo",
                "role": "buyer",
                "channels": ["email", "webhook"],
                "timezone": "Europe/Paris",
            }
        ],
    )
    data = parse_event(attrs).payload(SubscriptionStarted)
    assert data.goals is not None and data.goals[0].target == Decimal(100)
    assert data.contacts[0].timezone == "Europe/Paris"
    assert data.contacts[0].opted_out is False
    assert data.term_start == datetime(2025, 1, 1, tzinfo=UTC)
    assert parse_event(started(goals=[])).payload(SubscriptionStarted).goals == []


def test_provisioned_needs_no_data() -> None:
    attrs = make_event("laer.usage.provisioned", "acme", NOW, {})
    assert parse_event(attrs).type == "laer.usage.provisioned"
    assert parse_event(with_attr(attrs, data=None)).type == "laer.usage.provisioned"


def test_same_id_other_source_is_another_event() -> None:
    one = parse_event(base())
    two = parse_event(with_attr(base(), source="billing-eu"))
    assert one.key != two.key
    assert one.key == ("test", "e1")


def test_make_event_is_deterministic_and_json() -> None:
    data = {"date": datetime(2025, 2, 1, tzinfo=UTC), "count": 3}
    a = make_event("laer.usage.active_users", "acme", NOW, data)
    b = make_event("laer.usage.active_users", "acme", NOW, data)
    c = make_event("laer.usage.active_users", "acme", NOW, {**data, "count": 4})
    assert a == b and a["id"] != c["id"]
    assert json.loads(json.dumps(a)) == a
    assert a["time"] == "2025-03-01T12:00:00Z"


def test_cloud_event_round_trips_through_json() -> None:
    event = parse_event(started(goals=[{"key": "g", "target": 5}]))
    dumped = event.model_dump(mode="json")
    assert CloudEvent.model_validate(dumped) == event
    assert CloudEvent.model_validate_json(event.model_dump_json()) == event
    assert isinstance(CloudEvent.model_validate(dumped).data, SubscriptionStarted)


def test_every_type_has_a_model_family_and_schema() -> None:
    schemas = event_json_schemas()
    assert set(schemas) == set(EVENT_DATA_MODELS)
    for event_type in EVENT_DATA_MODELS:
        assert event_family(event_type) in {"billing", "usage", "support"}
        schema = schemas[event_type]
        assert {"id", "source", "type", "subject", "time", "data"} <= set(schema["required"])
        json.dumps(schema)
    assert event_family("laer.usage.feature_used") == "usage"
    assert event_family("nonsense") == ""


def test_invalid_event_is_a_value_error() -> None:
    err = InvalidEvent("unknown_type", "type: nope")
    assert isinstance(err, ValueError)
    assert (err.reason, err.message) == ("unknown_type", "type: nope")
