"""The reactions workload: accounts built by the real domain, their signals held back, then
released into the store as the consumer writes them (signal and outbox row, one transaction)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from flows.kit.registry import Playbook
from laer_domain.events import make_event, parse_event
from laer_domain.model import Stage
from laer_domain.policy import Policy
from laer_domain.rules import sweep
from laer_domain.service import LifecycleService
from laer_domain.signals import Evidence, Signal, SignalKind
from persistence import rows
from persistence.bulk import insert_rows, table_of
from persistence.tables import OutboxRow, SignalRow
from persistence.uow import UnitOfWork

Event = dict[str, Any]


def daytime_zone(now: datetime) -> str:
    """An Etc/GMT zone where it is around noon at `now` (keeps quiet hours out of the run)."""
    offset = 12 - now.hour  # hours east of UTC; Etc/GMT signs are inverted
    return "Etc/GMT" if offset == 0 else f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"


def _contacts(account: str, zone: str) -> list[dict[str, Any]]:
    return [{"email": f"{role}@{account}.example", "name": f"{role.title()} of {account}",
             "role": role, "channels": ["email"], "timezone": zone}
            for role in ("buyer", "admin", "champion")]


def _landing(account: str, t0: datetime, zone: str, term_days: int = 365) -> list[Event]:
    """subscription_started + invoice_paid + provisioned: the account ends in adopt."""
    return [
        make_event("laer.billing.subscription_started", account, t0, {
            "plan": "team", "seats": 20, "mrr": "1500.00", "currency": "EUR",
            "term_start": t0.isoformat(),
            "term_end": (t0 + timedelta(days=term_days)).isoformat(),
            "contacts": _contacts(account, zone)}, source="billing"),
        make_event("laer.billing.invoice_paid", account, t0 + timedelta(days=1),
                   {"invoice_id": "inv-1", "amount": 1500, "currency": "EUR"}, source="billing"),
        make_event("laer.usage.provisioned", account, t0 + timedelta(days=2), {},
                   source="product"),
    ]


def _failed_payment(account: str, at: datetime) -> Event:
    return make_event("laer.billing.payment_failed", account, at,
                      {"invoice_id": f"inv-{at:%j}", "amount": 1500, "currency": "EUR",
                       "attempt": 1}, source="billing")


@dataclass(frozen=True)
class Recipe:
    """Events that put an account where a playbook's first step acts (and raise its signal)."""

    name: str
    events: Callable[[str, datetime, str], list[Event]]
    sweep_days: tuple[int, ...] = ()  # sweeps of this account at t0 + days, after the events
    after: Callable[[str, datetime], list[Event]] = lambda account, t0: []


# One per playbook in flows/ (onboarding comes with every landing).
RECIPES = (
    Recipe("upsell", lambda a, t0, z: [*_landing(a, t0, z), make_event(
        "laer.usage.limit_reached", a, t0 + timedelta(days=10),
        {"limit": "api_calls", "used": 1000, "allowed": 1000}, source="product")]),
    Recipe("churn_rescue", lambda a, t0, z: [*_landing(a, t0, z),
                                             _failed_payment(a, t0 + timedelta(days=8))]),
    Recipe("win_back", lambda a, t0, z: [*_landing(a, t0, z), make_event(
        "laer.billing.subscription_canceled", a, t0 + timedelta(days=20),
        {"effective_at": (t0 + timedelta(days=20)).isoformat(), "reason": "budget"},
        source="billing")]),
    Recipe("adoption_nudge", lambda a, t0, z: _landing(a, t0, z), sweep_days=(17,)),
    Recipe("renewal_outreach", lambda a, t0, z: _landing(a, t0, z, term_days=200),
           sweep_days=(111,)),
    Recipe("renewal_escalation", lambda a, t0, z: _landing(a, t0, z, term_days=200),
           sweep_days=(111,),
           after=lambda a, t0: [_failed_payment(a, t0 + timedelta(days=112))]),
)


@dataclass
class Held:
    """Signals the domain raised, held back from the store, each with the playbooks it starts."""

    signals: list[Signal] = field(default_factory=list)
    playbooks: dict[str, list[str]] = field(default_factory=dict)  # signal id -> playbooks

    def expected(self) -> set[tuple[str, str]]:
        """(account, playbook) pairs whose first step the released signals must execute."""
        return {(s.account_id, pb) for s in self.signals for pb in self.playbooks[s.id]}


def _sweep(uow: UnitOfWork, account_ids: list[str], at: datetime, policy: Policy) -> None:
    """The daily sweep at `at` of these accounts only (as LifecycleService.sweep does all)."""
    for account_id in account_ids:
        account = uow.accounts.get(account_id)
        if account is None:
            continue
        outcome = sweep(account, at, policy)
        if outcome.account != account:
            uow.accounts.add_or_update(outcome.account)
            uow.accounts.record(outcome)


def account_names(prefix: str) -> Iterator[tuple[str, Recipe]]:
    """Endless account ids, round robin over the recipes."""
    i = 0
    while True:
        recipe = RECIPES[i % len(RECIPES)]
        yield f"{prefix}-{recipe.name.replace('_', '')}-{i:05d}", recipe
        i += 1


def build(sessions: sessionmaker[Session], playbooks: list[Playbook], prefix: str, n: int,
          now: datetime, policy: Policy | None = None, chunk: int = 120) -> Held:
    """Accounts fed through the domain until `n` signals start a playbook; those signals are
    taken out of the store again (and out of the outbox) and returned, to be released later."""
    policy = policy or Policy()
    t0 = (now - timedelta(days=130)).replace(hour=9, minute=0, second=0, microsecond=0)
    zone = daytime_zone(now)
    held = Held()
    names = account_names(prefix)
    while len(held.signals) < n:
        group = [next(names) for _ in range(chunk)]
        raised: list[Signal] = []
        with UnitOfWork(sessions) as uow:
            service = LifecycleService(uow.accounts, policy)
            for account, recipe in group:
                for raw in recipe.events(account, t0, zone):
                    raised.extend(service.handle(parse_event(raw)).signals)
            for days in sorted({d for _, r in group for d in r.sweep_days}):
                _sweep(uow, [a for a, r in group if days in r.sweep_days],
                       t0 + timedelta(days=days), policy)
            for account, recipe in group:
                for raw in recipe.after(account, t0):
                    raised.extend(service.handle(parse_event(raw)).signals)
            uow.commit()
        _take_back(sessions, [a for a, _ in group], held, playbooks, n)
    return held


def _take_back(sessions: sessionmaker[Session], accounts: list[str], held: Held,
               playbooks: list[Playbook], n: int) -> None:
    """Move the accounts' stored signals from the store into `held` (those that start one)."""
    with sessions() as s:
        order = {account: i for i, account in enumerate(accounts)}
        # account by account (round robin over the recipes), so a cut keeps every playbook
        stored = sorted(s.scalars(select(SignalRow).where(SignalRow.account_id.in_(accounts))),
                        key=lambda row: (order[row.account_id], row.seq))
        for row in stored:
            signal = Signal(id=row.id, kind=SignalKind(row.kind), account_id=row.account_id,
                            at=row.at, stage=Stage(row.stage),
                            evidence=Evidence.model_validate(row.evidence))
            starts = [pb.name for pb in playbooks
                      if pb.wants(signal.kind, signal.stage, signal.evidence.details)]
            if starts and len(held.signals) < n and row.retracted_at is None:
                held.signals.append(signal)
                held.playbooks[signal.id] = starts
        ids = [row.id for row in stored]
        s.execute(delete(OutboxRow).where(OutboxRow.signal_id.in_(ids)))
        s.execute(delete(SignalRow).where(SignalRow.id.in_(ids)))
        s.commit()


def release(sessions: sessionmaker[Session], signals: list[Signal]) -> datetime:
    """Store the signals and queue them, in one transaction as the consumer's batch writes
    them (persistence.rows + persistence.bulk); returns the outbox rows' created_at."""
    now = datetime.now(UTC)
    with sessions() as s:
        seq = int(s.scalar(select(func.coalesce(func.max(SignalRow.seq), 0))) or 0) + 1
        insert_rows(s, table_of(SignalRow),
                    [rows.signal_row(signal, seq + i) for i, signal in enumerate(signals)])
        insert_rows(s, table_of(OutboxRow), [rows.outbox_row(signal, now) for signal in signals])
        s.commit()
    return now
