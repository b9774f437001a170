"""A simulated cohort as a backlog, its event-time-ordered reference, and a database's state.

One account's events come from three topics and Kafka orders them only within a partition,
so the consumer may read one topic weeks of event time ahead of another. Whatever the
interleaving, the stored state must be that of handling every event in (time, id) order:
the reference here is exactly that, through the domain's in-memory service.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from laer.publish import Mode
from laer.simulate import CohortSpec, cohort
from laer_domain.events import InvalidEvent, event_family, parse_event
from laer_domain.service import InMemoryRepository, in_memory_service
from persistence.tables import (
    AccountRow,
    AppliedEventRow,
    HealthChangeRow,
    OutboxRow,
    SignalRow,
    StageChangeRow,
)

Event = dict[str, Any]
Round = list[tuple[Event, Mode]]


def backlog(accounts: int, seed: int) -> dict[str, Round]:
    """The cohort's events per family (billing, usage, support), each in event-time order.

    One record in five uses the binary binding; the cohort's few malformed events stay in
    (they go to the dead-letter topic and are not part of any state).
    """
    by_family: dict[str, Round] = {"billing": [], "usage": [], "support": []}
    for n, event in enumerate(cohort(CohortSpec(accounts=accounts, seed=seed))):
        mode: Mode = "binary" if n % 5 == 0 else "structured"
        by_family[event_family(event["type"])].append((event, mode))
    return by_family


def in_event_time_order(events: list[Event]) -> InMemoryRepository:
    """The in-memory service's repository after every valid event, handled in (time, id) order."""
    service = in_memory_service()
    for event in sorted(events, key=lambda e: (e["time"], e["id"])):
        try:
            parsed = parse_event(event, topic_family=event_family(event["type"]),
                                 record_key=event["subject"])
        except InvalidEvent:
            continue  # dead-lettered by the consumer
        service.handle(parsed)
    repo = service.repo
    assert isinstance(repo, InMemoryRepository)
    assert not repo.retracted, "event-time order re-sequenced something: not a reference"
    return repo


def reference(events: list[Event]) -> dict[str, Any]:
    """The state of handling every valid event in (time, id) order, in the shape of `snapshot`."""
    repo = in_event_time_order(events)
    stage_changes: dict[str, list[Any]] = defaultdict(list)
    for c in repo.stage_changes:
        stage_changes[c.account_id].append(
            (c.from_stage.value if c.from_stage else None, c.to_stage.value, c.at.isoformat(),
             c.reason, c.event_id))
    health: dict[str, list[Any]] = defaultdict(list)
    for h in repo.health_changes:
        health[h.account_id].append((h.at.isoformat(), h.score, h.band, dict(h.components)))
    timelines: dict[str, list[Any]] = defaultdict(list)
    for account_id, e in repo.events:
        timelines[account_id].append((e.time.isoformat(), e.id, e.source, e.type,
                                      e.data.model_dump(mode="json")))
    signals = sorted({s.id for s in repo.signals})
    return {
        "accounts": {a.id: (a.stage.value, a.stage_since.isoformat(), a.model_dump(mode="json"))
                     for a in repo.accounts.values()},
        "stage_changes": dict(stage_changes),
        "health_changes": dict(health),
        "signals": signals,
        "outbox": signals,
        "timelines": {k: sorted(v) for k, v in timelines.items()},
    }


def snapshot(sessions: sessionmaker[Session]) -> dict[str, Any]:
    """What the database holds, in the shape of `reference`.

    Signals a rebuild retracted (and their outbox rows) are left out; stage and health
    histories are in the order the read side shows them (row order), timelines in event-time
    order.
    """
    with sessions() as s:
        accounts = {r.id: (r.stage, r.stage_since.isoformat(), r.state)
                    for r in s.scalars(select(AccountRow))}
        stage_changes: dict[str, list[Any]] = defaultdict(list)
        for c in s.scalars(select(StageChangeRow).order_by(StageChangeRow.id)):
            stage_changes[c.account_id].append((c.from_stage, c.to_stage, c.at.isoformat(),
                                                c.reason, c.event_id))
        health: dict[str, list[Any]] = defaultdict(list)
        for h in s.scalars(select(HealthChangeRow).order_by(HealthChangeRow.id)):
            health[h.account_id].append((h.at.isoformat(), h.score, h.band, h.components))
        signals = sorted(s.scalars(select(SignalRow.id).where(SignalRow.retracted_at.is_(None))))
        outbox = sorted(s.scalars(select(OutboxRow.signal_id).where(
            OutboxRow.status != "retracted")))
        timelines: dict[str, list[Any]] = defaultdict(list)
        for e in s.scalars(select(AppliedEventRow)):
            timelines[e.account_id].append((e.time.isoformat(), e.event_id, e.source, e.type,
                                            e.data))
    return {"accounts": accounts, "stage_changes": dict(stage_changes),
            "health_changes": dict(health), "signals": signals, "outbox": outbox,
            "timelines": {k: sorted(v) for k, v in timelines.items()}}


def final_stages_differing(actual: dict[str, Any], expected: dict[str, Any]) -> int:
    """How many accounts end in another stage than the reference (for failure messages)."""
    return sum(1 for k, (stage, *_rest) in expected["accounts"].items()
               if k not in actual["accounts"] or actual["accounts"][k][0] != stage)
