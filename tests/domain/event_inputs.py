"""Wire-shaped events for the event tests, and ways to spoil them."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from laer_domain import make_event

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
