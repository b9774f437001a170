"""A tiny simulator driving the lifecycle service with wire-shaped events."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from laer_domain import (
    Account,
    HandleResult,
    InMemoryRepository,
    LifecycleService,
    Policy,
    Signal,
    SignalKind,
    Stage,
    make_event,
    parse_event,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def day(n: float, hours: float = 0) -> datetime:
    """Return T0 plus n days (and hours)."""
    return T0 + timedelta(days=n, hours=hours)


def started_data(
    *,
    start: datetime = T0,
    days: int = 365,
    seats: int = 10,
    goals: list[dict[str, Any]] | None = None,
    contacts: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Return subscription_started data for a term of `days` days."""
    data: dict[str, Any] = {
        "plan": "pro",
        "seats": seats,
        "mrr": "990.00",
        "currency": "EUR",
        "term_start": start.isoformat(),
        "term_end": (start + timedelta(days=days)).isoformat(),
    }
    if goals is not None:
        data["goals"] = goals
    if contacts is not None:
        data["contacts"] = contacts
    return data


class Sim:
    """Feeds events through a LifecycleService over an in-memory repository."""

    def __init__(self, policy: Policy | None = None) -> None:
        self.repo = InMemoryRepository()
        self.policy = policy or Policy()
        self.service = LifecycleService(self.repo, self.policy)
        self.results: list[HandleResult] = []

    def send(
        self,
        kind: str,
        at: datetime,
        data: Mapping[str, Any] | None = None,
        *,
        account: str = "acme",
        id: str | None = None,
        source: str = "test",
    ) -> HandleResult:
        """Send one event; `kind` is the type without the `laer.` prefix."""
        wire = make_event(f"laer.{kind}", account, at, data or {}, id=id, source=source)
        result = self.service.handle(parse_event(wire))
        self.results.append(result)
        return result

    def start(self, at: datetime = T0, *, account: str = "acme", **kw: Any) -> HandleResult:
        """Land an account with a term starting at `at`."""
        return self.send(
            "billing.subscription_started", at, started_data(start=at, **kw), account=account
        )

    def go_live(self, at: datetime, *, account: str = "acme") -> None:
        """Pay the first invoice and provision (land -> adopt)."""
        self.send("billing.invoice_paid", at, _invoice(), account=account)
        self.send("usage.provisioned", at, account=account)

    def active(self, at: datetime, count: int, *, account: str = "acme") -> HandleResult:
        """Report active users for the date of `at`."""
        return self.send(
            "usage.active_users",
            at,
            {"date": at.date().isoformat(), "count": count},
            account=account,
        )

    def cancel(self, at: datetime, effective_at: datetime, reason: str) -> HandleResult:
        """Cancel the subscription as of `effective_at`."""
        data = {"effective_at": effective_at.isoformat(), "reason": reason}
        return self.send("billing.subscription_canceled", at, data)

    def renew(self, at: datetime, start: datetime, end: datetime, **terms: Any) -> HandleResult:
        """Renew for a term from `start` to `end`; `terms` are plan, seats, mrr, goals."""
        data = {"term_start": start.isoformat(), "term_end": end.isoformat(), **terms}
        return self.send("billing.subscription_renewed", at, data)

    def sweep(self, at: datetime) -> None:
        """Run the daily sweep at `at`."""
        self.service.sweep(at)

    def account(self, account: str = "acme") -> Account:
        """Return the stored account."""
        found = self.repo.get(account)
        assert found is not None
        return found

    def stage(self, account: str = "acme") -> Stage:
        """Return the account's stage."""
        return self.account(account).stage

    def signals(self, kind: SignalKind | None = None, account: str = "acme") -> list[Signal]:
        """Return recorded signals of an account, optionally of one kind."""
        return [
            s
            for s in self.repo.signals
            if s.account_id == account and (kind is None or s.kind is kind)
        ]

    def kinds(self, account: str = "acme") -> list[SignalKind]:
        """Return the kinds of recorded signals, in order."""
        return [s.kind for s in self.signals(account=account)]

    def one(self, kind: SignalKind, account: str = "acme") -> Signal:
        """Return the single signal of a kind."""
        found = self.signals(kind, account)
        assert len(found) == 1, f"expected one {kind}, got {found}"
        return found[0]

    def transitions(self, account: str = "acme") -> list[tuple[str | None, str]]:
        """Return (from, to) of the recorded stage changes."""
        return [
            (c.from_stage.value if c.from_stage else None, c.to_stage.value)
            for c in self.repo.stage_changes
            if c.account_id == account
        ]


def _invoice(n: int = 1) -> dict[str, Any]:
    return {"invoice_id": f"inv-{n}", "amount": "990.00", "currency": "EUR"}


def invoice(n: int = 1) -> dict[str, Any]:
    """Return invoice data."""
    return _invoice(n)


def core(signals: Iterable[Signal]) -> list[SignalKind]:
    """Return signal kinds without FeatureUnderused (key features go unused in most tests)."""
    return [s.kind for s in signals if s.kind is not SignalKind.FeatureUnderused]
