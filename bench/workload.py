"""The benchmarks' workload: valid events over many accounts, the same for a given seed."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from laer_domain.events import make_event

T0 = datetime(2026, 2, 2, 9, 0, tzinfo=UTC)


def events(n: int, seed: int = 1, per_account: int = 20, prefix: str = "b"
           ) -> Iterator[dict[str, Any]]:
    """n valid events: each account lands first, then a mix of usage, support and billing."""
    rnd = random.Random(seed)
    accounts = max(1, n // per_account)
    sent = 0
    for a in range(accounts):
        if sent >= n:
            return
        acc = f"{prefix}-{a:07d}"
        yield make_event("laer.billing.subscription_started", acc, T0, {
            "plan": "team", "seats": 20, "mrr": "1500.00", "currency": "EUR",
            "term_start": "2026-02-02", "term_end": "2027-02-02"},
            id=f"{acc}-0", source="billing")
        sent += 1
    i = 0
    while sent < n:
        acc = f"{prefix}-{rnd.randrange(accounts):07d}"
        at = T0 + timedelta(minutes=i)
        i += 1
        kind = rnd.random()
        if kind < 0.45:
            ev = make_event("laer.usage.active_users", acc, at,
                            {"date": at.date().isoformat(), "count": rnd.randint(0, 20)},
                            id=f"{acc}-u{i}", source="product")
        elif kind < 0.8:
            ev = make_event("laer.usage.feature_used", acc, at,
                            {"feature": rnd.choice(["api", "sso", "reports"]),
                             "count": rnd.randint(1, 50)}, id=f"{acc}-f{i}", source="product")
        elif kind < 0.92:
            ev = make_event("laer.support.ticket_opened", acc, at,
                            {"ticket_id": f"t{i}", "priority": "normal"},
                            id=f"{acc}-t{i}", source="helpdesk")
        else:
            ev = make_event("laer.billing.invoice_paid", acc, at,
                            {"invoice_id": f"i{i}", "amount": 1500, "currency": "EUR"},
                            id=f"{acc}-i{i}", source="billing")
        yield ev
        sent += 1
