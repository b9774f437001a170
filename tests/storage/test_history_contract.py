"""`replace_history`, the one write a rebuild makes, has one contract in every repository.

The account's stage changes, health changes and timeline become the rebuild's; a stored
signal it no longer raises is retracted (its pending outbox row too), one it raises again
stays stored and queued once (a retracted one is restored), a new one is stored and queued.
Run on the row-at-a-time repository and the batch repository, on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select

from laer_domain.events import make_event, parse_event
from laer_domain.memory import InMemoryRepository
from laer_domain.model import Stage
from laer_domain.policy import Policy
from laer_domain.resequence import History
from laer_domain.service import LifecycleService
from laer_domain.signals import Evidence, Signal, SignalKind, StageChange, signal_id
from persistence.batch_repository import BatchRepository
from persistence.queries import account_detail
from persistence.tables import AppliedEventRow, OutboxRow, SignalRow, StageChangeRow
from persistence.uow import UnitOfWork, session_factory

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def signal(kind: SignalKind, days: int, rule: str = "test") -> Signal:
    at = T0 + timedelta(days=days)
    return Signal(id=signal_id("a", kind, at), kind=kind, account_id="a", at=at,
                  stage=Stage.ADOPT, evidence=Evidence(rule=rule))


X, Y = signal(SignalKind.WentLive, 1), signal(SignalKind.ChurnRiskRaised, 2)
LANDING = parse_event(make_event("laer.billing.subscription_started", "a", T0, {
    "plan": "team", "seats": 10, "mrr": "900", "currency": "EUR",
    "term_start": "2026-03-02", "term_end": "2027-03-02"}))
TICKET = parse_event(make_event("laer.support.ticket_opened", "a", T0 + timedelta(days=3),
                                {"ticket_id": "t1", "priority": "low"}))


def history(*signals: Signal, reason: str = "rebuilt") -> History:
    change = StageChange(account_id="a", from_stage=None, to_stage=Stage.LAND, at=T0,
                         reason=reason, event_id=LANDING.id)
    return History(signals=signals, stage_changes=(change,), health_changes=(),
                   events=(LANDING, TICKET))


def replace(engine: Engine, store: str, rebuilt: History) -> None:
    """One `replace_history` through `store`, committed."""
    with UnitOfWork(session_factory(engine)) as uow:
        if store == "orm":
            uow.accounts.replace_history("a", rebuilt)
        else:
            repo = BatchRepository(uow.session)
            repo.prefetch([LANDING])
            repo.replace_history("a", rebuilt)
            repo.write()
        uow.commit()


def stored(engine: Engine) -> dict[str, Any]:
    with session_factory(engine)() as s:
        signals = {r.id: r.retracted_at is not None for r in s.scalars(select(SignalRow))}
        outbox = sorted((r.signal_id, r.status) for r in s.scalars(select(OutboxRow)))
        changes = [c.reason for c in s.scalars(select(StageChangeRow))]
        timeline = [e.event_id for e in s.scalars(select(AppliedEventRow)
                                                  .order_by(AppliedEventRow.id))]
        detail = account_detail(s, "a")
    assert detail is not None
    shown = {x["id"]: x["retracted_at"] is not None for x in detail["signals"]}
    assert shown == signals  # `laer account` shows which are retracted
    return {"signals": signals, "outbox": outbox, "changes": changes, "timeline": timeline}


@pytest.mark.parametrize("store", ["orm", "batch"])
def test_replace_history_retracts_keeps_restores_and_adds(engine: Engine, store: str) -> None:
    with UnitOfWork(session_factory(engine)) as uow:
        landed = LifecycleService(uow.accounts, Policy()).handle(LANDING).signals
        uow.accounts.record_event(TICKET, "a")
        uow.commit()
    (landing,) = landed  # AccountLanded
    replace(engine, store, history(landing, X, X))  # X twice: stored and queued once
    got = stored(engine)
    assert got["signals"] == {landing.id: False, X.id: False}
    assert got["outbox"] == sorted([(landing.id, "pending"), (X.id, "pending")])
    assert got["changes"] == ["rebuilt"] and got["timeline"] == [LANDING.id, TICKET.id]

    replace(engine, store, history(landing, Y, reason="again"))
    got = stored(engine)
    assert got["signals"] == {landing.id: False, X.id: True, Y.id: False}
    assert got["outbox"] == sorted([(landing.id, "pending"), (X.id, "retracted"),
                                    (Y.id, "pending")])
    assert got["changes"] == ["again"] and got["timeline"] == [LANDING.id, TICKET.id]

    with session_factory(engine)() as s:  # Y was dispatched meanwhile
        row = s.scalar(select(OutboxRow).where(OutboxRow.signal_id == Y.id))
        assert row is not None
        row.status = "done"
        s.commit()
    replace(engine, store, history(landing, X))
    got = stored(engine)
    assert got["signals"] == {landing.id: False, X.id: False, Y.id: True}
    assert got["outbox"] == sorted([(landing.id, "pending"), (X.id, "pending"),
                                    (Y.id, "done")])


def test_the_in_memory_repository_keeps_the_same_contract() -> None:
    repo = InMemoryRepository()
    landed = LifecycleService(repo, Policy()).handle(LANDING).signals
    repo.replace_history("a", history(*landed, X))
    repo.replace_history("a", history(*landed, Y))
    assert [s.id for s in repo.signals] == [*(s.id for s in landed), Y.id]
    assert set(repo.retracted) == {X.id}
    repo.replace_history("a", history(*landed, X))
    assert set(repo.retracted) == {Y.id}
    assert [c.reason for c in repo.stage_changes] == ["rebuilt"]
    assert [e.id for e in repo.timeline("a")] == [LANDING.id, TICKET.id]
