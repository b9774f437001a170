"""Late events through the real repositories, on SQLite and PostgreSQL.

An account's billing read after its usage and support (a held-back topic): a usage event
past term end + grace lapses the term before the renewal that prevents it is read. The
stores must end exactly as the events handled in event-time order, with the signals the
rebuild no longer raises retracted (their outbox rows never dispatched) and none twice.
"""

from __future__ import annotations

import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from consumers import metrics
from consumers.ingest import Ingestor
from consumers.records import RawRecord
from consumers.settings import ConsumerSettings
from laer.publish import encode
from laer_domain.events import event_family, make_event, parse_event
from laer_domain.policy import Policy
from laer_domain.service import LifecycleService
from persistence.tables import OutboxRow, SignalRow
from persistence.uow import UnitOfWork, session_factory
from tests.consumers.workload import differences, reference, snapshot

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
FAMILIES = {"t.billing": "billing", "t.usage": "usage", "t.support": "support"}
TOPICS = {family: topic for topic, family in FAMILIES.items()}
Event = dict[str, Any]


def _ev(kind: str, account: str, days: float, data: dict[str, Any]) -> Event:
    source = {"billing": "billing-system", "usage": "product", "support": "helpdesk"}
    return make_event(f"laer.{kind}", account, T0 + timedelta(days=days), data,
                      source=source[kind.split(".")[0]])


def _term(account: str, start: float, end: float) -> dict[str, Any]:
    return {"plan": "team", "seats": 10, "mrr": "900", "currency": "EUR",
            "term_start": (T0 + timedelta(days=start)).isoformat(),
            "term_end": (T0 + timedelta(days=end)).isoformat(),
            "contacts": [{"email": f"owner@{account}.example", "role": "buyer"}]}


def story(account: str) -> list[Event]:
    """A 100-day term renewed at day 95; usage at day 120 is past term end + 14 days."""
    return [
        _ev("billing.subscription_started", account, 0, _term(account, 0, 100)),
        _ev("billing.invoice_paid", account, 1, {"invoice_id": "i1", "amount": 900,
                                                 "currency": "EUR"}),
        _ev("billing.subscription_renewed", account, 95,
            {k: v for k, v in _term(account, 100, 200).items() if k != "contacts"}),
        _ev("billing.payment_failed", account, 130, {"invoice_id": "i2", "amount": 900,
                                                     "currency": "EUR", "attempt": 1}),
        _ev("usage.provisioned", account, 0.1, {}),
        _ev("usage.active_users", account, 3, {"date": (T0 + timedelta(days=3)).date()
                                               .isoformat(), "count": 8}),
        _ev("usage.active_users", account, 120, {"date": (T0 + timedelta(days=120)).date()
                                                 .isoformat(), "count": 8}),
        _ev("support.ticket_opened", account, 50, {"ticket_id": "t1", "priority": "high"}),
        _ev("support.survey_response", account, 60, {"kind": "nps", "score": 3}),
    ]


def arrival(accounts: list[str], billing: str) -> list[Event]:
    """Each topic in event-time order; billing read `first` or `last` of the three."""
    events = [e for account in accounts for e in story(account)]
    by_topic = {family: sorted((e for e in events if event_family(e["type"]) == family),
                               key=lambda e: (e["time"], e["id"]))
                for family in ("billing", "usage", "support")}
    order = (["billing", "usage", "support"] if billing == "first"
             else ["usage", "support", "billing"])
    return [e for family in order for e in by_topic[family]]


def expected(events: list[Event]) -> dict[str, Any]:
    """The reference: every event handled in (time, id) order."""
    ordered = sorted(events, key=lambda e: (parse_event(e).time, e["id"]))
    return reference([[(e, "structured") for e in ordered]])


def live_snapshot(factory: sessionmaker[Session]) -> dict[str, Any]:
    """`snapshot` without retracted signals and their outbox rows."""
    with factory() as s:
        retracted = set(s.scalars(select(SignalRow.id).where(SignalRow.retracted_at.is_not(None))))
    got = snapshot(factory)
    got["signals"] = [row for row in got["signals"] if row[0] not in retracted]
    got["outbox"] = [signal_id for signal_id in got["outbox"] if signal_id not in retracted]
    return got


def retractions(factory: sessionmaker[Session]) -> list[tuple[str, str | None]]:
    """(kind, outbox status) of every retracted signal."""
    with factory() as s:
        return list(s.execute(
            select(SignalRow.kind, OutboxRow.status)
            .join(OutboxRow, OutboxRow.signal_id == SignalRow.id, isouter=True)
            .where(SignalRow.retracted_at.is_not(None)).order_by(SignalRow.seq)).tuples())


def records(events: list[Event]) -> list[RawRecord]:
    offsets: dict[tuple[str, int], int] = {}
    out = []
    for event in events:
        key, value, headers = encode(event, "structured")
        tp = (TOPICS[event_family(event["type"])], zlib.crc32(key) % 2)
        offsets[tp] = offsets.get(tp, -1) + 1
        out.append(RawRecord(tp[0], tp[1], offsets[tp], key, value, tuple(headers)))
    return out


@pytest.mark.parametrize("billing", ["first", "last"])
@pytest.mark.parametrize("batch", [1, 4, 1000])
def test_batches_in_any_topic_order_store_the_event_time_order_state(
        engine: Engine, billing: str, batch: int) -> None:
    events = arrival(["a", "b", "c"], billing)
    ingestor = Ingestor(session_factory(engine), Policy(), "g", FAMILIES,
                        ConsumerSettings(), lambda letters: None, lambda: datetime.now(UTC))
    recs = records(events)
    resequenced = 0
    counted = REGISTRY.get_sample_value("laer_resequenced_events_total") or 0.0
    for i in range(0, len(recs), batch):
        report = ingestor.process(recs[i:i + batch])
        assert not report.dead_letters
        metrics.observe_batch(report, 0.0)
        resequenced += sum(n for (_, status), n in report.outcomes_by_type.items()
                           if status == "resequenced")
    assert REGISTRY.get_sample_value("laer_resequenced_events_total") == counted + resequenced
    factory = session_factory(engine)
    problems = differences(live_snapshot(factory), expected(events))
    assert not problems, "\n".join(problems)
    if batch == 1000:  # one batch is handled in event-time order: nothing to rebuild
        assert resequenced == 0 and retractions(factory) == []
    else:
        assert resequenced > 0
    if billing == "last" and batch < 1000:  # the lapse churned them before the renewal came
        gone = retractions(factory)
        assert ("Churned", "retracted") in gone
        assert all(status == "retracted" for _, status in gone)


@pytest.mark.parametrize("billing", ["first", "last"])
def test_one_event_at_a_time_stores_the_event_time_order_state(engine: Engine,
                                                               billing: str) -> None:
    """The row-at-a-time repository (a unit of work per event), as flows and tools use it."""
    events = arrival(["a"], billing)
    factory = session_factory(engine)
    statuses = []
    for event in events:
        with UnitOfWork(factory) as uow:
            statuses.append(LifecycleService(uow.accounts, Policy()).handle(
                parse_event(event)).status)
            uow.commit()
    assert "resequenced" in statuses
    problems = differences(live_snapshot(factory), expected(events))
    assert not problems, "\n".join(problems)
    if billing == "last":
        assert ("Churned", "retracted") in retractions(factory)
