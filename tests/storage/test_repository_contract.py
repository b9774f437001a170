"""One contract for the SQL repository, run on SQLite and on PostgreSQL alike."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, inspect, select

from laer_domain.events import event_json_schemas, make_event, parse_event
from laer_domain.policy import Policy
from laer_domain.service import LifecycleService, in_memory_service
from persistence.db import make_engine, upgrade
from persistence.queries import account_detail, list_accounts
from persistence.tables import OutboxRow, SignalRow, StageChangeRow
from persistence.uow import UnitOfWork, session_factory

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]


def events(account: str) -> list[Any]:
    raw = [
        make_event("laer.usage.provisioned", account, T0 - timedelta(hours=1), {}),  # early
        make_event("laer.billing.subscription_started", account, T0, {
            "plan": "team", "seats": 10, "mrr": "900", "currency": "EUR",
            "term_start": "2026-03-02", "term_end": "2027-03-02",
            "goals": [{"key": "reports", "target": 5}]}),
        make_event("laer.billing.invoice_paid", account, T0 + timedelta(days=1),
                   {"invoice_id": "i1", "amount": 900, "currency": "EUR"}),
        make_event("laer.usage.outcome_achieved", account, T0 + timedelta(days=9),
                   {"goal": "reports", "value": 7}),
    ]
    return [parse_event(e) for e in raw]


def test_repository_contract(database_url: str) -> None:
    engine = make_engine(database_url)
    upgrade(engine)
    upgrade(engine)  # idempotent
    assert {"accounts", "signals", "outbox", "consumer_offsets"} <= set(
        inspect(engine).get_table_names())
    factory = session_factory(engine)
    policy = Policy()

    with UnitOfWork(factory, "g1") as uow:
        service = LifecycleService(uow.accounts, policy)
        statuses = [service.handle(e, origin={"topic": "t", "offset": i}).status
                    for i, e in enumerate(events("acc-1"))]
        assert statuses == ["parked", "applied", "applied", "applied"]
        assert service.handle(events("acc-1")[2]).status == "duplicate"
        uow.offsets.advance("laer.billing", 0, 10)
        uow.offsets.advance("laer.billing", 0, 7)  # never backwards
        uow.commit()
    with UnitOfWork(factory, "g1") as uow:
        assert uow.offsets.stored() == {("laer.billing", 0): 10}
        assert uow.offsets.lock([("laer.billing", 0), ("laer.usage", 1)]) == {
            ("laer.billing", 0): 10}
        account = uow.accounts.get("acc-1")
        assert account is not None and account.stage.value == "expand"
        assert uow.accounts.take_parked("acc-1") == []  # applied at landing
        assert uow.accounts.live_account_ids() == ["acc-1"]

    # the same events through the in-memory repository give the same account
    reference = in_memory_service(policy)
    for e in events("acc-1"):
        reference.handle(e)
    with UnitOfWork(factory) as uow:
        assert uow.accounts.get("acc-1") == reference.repo.get("acc-1")

    with factory() as s:
        moves = [(c.from_stage, c.to_stage) for c in s.scalars(
            select(StageChangeRow).order_by(StageChangeRow.id))]
        assert moves == [(None, "land"), ("land", "adopt"), ("adopt", "expand")]
        signals = s.scalar(select(func.count()).select_from(SignalRow))
        assert signals and s.scalar(select(func.count()).select_from(OutboxRow)) == signals
        rows = list_accounts(s)
        assert [(r["id"], r["stage"]) for r in rows] == [("acc-1", "expand")]
        assert list_accounts(s, "land") == []
        detail = account_detail(s, "acc-1")
        assert detail is not None
        assert [e["type"] for e in detail["events"]][0] == "laer.billing.subscription_started"
        assert {"OutcomeAchieved", "StageChanged"} <= {x["kind"] for x in detail["signals"]}
        assert detail["goals"] and account_detail(s, "nobody") is None
        json.dumps(detail, default=str)
    engine.dispose()


def test_committed_json_schemas_match_the_models() -> None:
    committed = {p.name.removesuffix(".schema.json"): json.loads(p.read_text())
                 for p in (ROOT / "schemas").glob("*.schema.json")}
    assert committed == event_json_schemas(), "run `laer schema --out schemas`"
