"""Event validation: what valid events parse into, and the wire events `make_event` writes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from event_inputs import NOW, active, base, started, with_attr, with_data

from laer_domain import (
    EVENT_DATA_MODELS,
    CloudEvent,
    event_family,
    event_json_schemas,
    make_event,
    parse_event,
)
from laer_domain.payloads import ActiveUsers, InvoicePaid, SubscriptionStarted


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
