"""Per-topic event streams of several accounts, their interleavings and comparable views.

One account's events come on three topics (billing, usage, support), each in event-time
order; Kafka keeps that order within a topic's partition and nothing across topics. The
strategies here draw such streams (renewals around term end, cancellations effective in the
past and the future, lapses, win-backs, early usage before the landing) and merge them in
orders that keep each topic's order, from mild interleavings to one topic read weeks behind.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from domain_sim import T0
from hypothesis import strategies as st

from laer_domain import (
    CloudEvent,
    InMemoryRepository,
    LifecycleService,
    Policy,
    make_event,
    parse_event,
)

POLICY = Policy()
TOPICS = ("billing", "usage", "support")
SOURCES = {"billing": "billing-system", "usage": "product", "support": "helpdesk"}
ACCOUNTS = ("acc-a", "acc-b", "acc-c")
Story = dict[str, list[tuple[datetime, str, dict[str, Any]]]]


def _term(start: datetime, days: int, seats: int, goals: list[dict[str, Any]] | None
          ) -> dict[str, Any]:
    data: dict[str, Any] = {"plan": "pro", "seats": seats, "mrr": "100.00", "currency": "EUR",
                            "term_start": start.isoformat(),
                            "term_end": (start + timedelta(days=days)).isoformat()}
    return data if goals is None else {**data, "goals": goals}


_GOALS = st.none() | st.just([]) | st.just([{"key": "g1", "target": 5}])
_MONEY = {"invoice_id": "inv", "amount": "10", "currency": "EUR"}


@st.composite
def stories(draw: st.DrawFn) -> Story:
    """One account's events per topic (unsorted; `streams` sorts each topic)."""
    land = T0 + timedelta(hours=draw(st.integers(0, 72)))
    days = draw(st.sampled_from([60, 100, 150]))
    seats = draw(st.integers(2, 10))
    end = land + timedelta(days=days)
    billing: list[tuple[datetime, str, dict[str, Any]]] = [
        (land, "subscription_started", _term(land, days, seats, draw(_GOALS)))]
    if draw(st.booleans()):
        billing.append((land + timedelta(hours=draw(st.integers(1, 200))), "invoice_paid",
                        _MONEY))
    for _ in range(draw(st.integers(0, 2))):
        billing.append((land + timedelta(days=draw(st.integers(2, days))), "payment_failed",
                        {**_MONEY, "attempt": 1}))
    renewal = draw(st.none() | st.sampled_from([-100, -30, -1, 5, 20]))  # days from term end
    if renewal is not None:
        at = max(end + timedelta(days=renewal), land + timedelta(hours=1))
        billing.append((at, "subscription_renewed", _term(end, days, seats, draw(_GOALS))))
    if draw(st.booleans()):  # a cancellation effective before or after it was sent
        at = land + timedelta(days=draw(st.integers(5, days + 10)))
        effective = at + timedelta(days=draw(st.integers(-10, 40)))
        billing.append((at, "subscription_canceled",
                        {"effective_at": effective.isoformat(), "reason": "budget"}))
    if draw(st.booleans()):  # a win-back once the term has lapsed (or whenever it comes)
        at = end + timedelta(days=draw(st.integers(16, 60)))
        billing.append((at, "subscription_started", _term(at, days, seats, None)))
    usage: list[tuple[datetime, str, dict[str, Any]]] = []
    if draw(st.booleans()):  # provisioned, possibly before billing says the account signed
        usage.append((land + timedelta(hours=draw(st.integers(-30, 100))), "provisioned", {}))
    for _ in range(draw(st.integers(0, 8))):
        at = land + timedelta(days=draw(st.integers(0, days + 40)), hours=2)
        kind = draw(st.sampled_from(["active_users", "active_users", "feature_used",
                                     "limit_reached", "outcome_achieved"]))
        data: dict[str, Any] = {
            "active_users": {"date": at.date().isoformat(), "count": draw(st.integers(0, seats))},
            "feature_used": {"feature": draw(st.sampled_from(["reports", "integrations"])),
                             "count": 2},
            "limit_reached": {"limit": "api", "used": 10, "allowed": draw(st.integers(5, 12))},
            "outcome_achieved": {"goal": "g1", "value": draw(st.integers(3, 8))},
        }[kind]
        usage.append((at, kind, data))
    support: list[tuple[datetime, str, dict[str, Any]]] = []
    for _ in range(draw(st.integers(0, 5))):
        at = land + timedelta(days=draw(st.integers(0, days + 30)), hours=5)
        kind = draw(st.sampled_from(["ticket_opened", "ticket_escalated", "ticket_resolved",
                                     "survey_response"]))
        data = ({"kind": "nps", "score": draw(st.integers(0, 10))} if kind == "survey_response"
                else {"ticket_id": draw(st.sampled_from(["t1", "t2"])), "priority": "high"})
        if kind != "ticket_opened":
            data.pop("priority", None)
        support.append((at, kind, data))
    return {"billing": billing, "usage": usage, "support": support}


def streams(stories_by_account: dict[str, Story]) -> dict[str, list[CloudEvent]]:
    """Each topic's events of every account, in event-time order (one partition per topic)."""
    out: dict[str, list[CloudEvent]] = {}
    for topic in TOPICS:
        events = []
        for account, story in stories_by_account.items():
            for n, (at, kind, data) in enumerate(story[topic]):
                wire = make_event(f"laer.{topic}.{kind}", account, at, data,
                                  id=f"{account}-{topic}-{n:02d}", source=SOURCES[topic])
                events.append(parse_event(wire))
        out[topic] = sorted(events, key=lambda e: (e.time, e.id))
    return out


@st.composite
def cohorts(draw: st.DrawFn) -> dict[str, list[CloudEvent]]:
    """Per-topic streams of 1 to 3 accounts."""
    n = draw(st.integers(1, 3))
    return streams({account: draw(stories()) for account in ACCOUNTS[:n]})


@st.composite
def interleavings(draw: st.DrawFn, topics: dict[str, list[CloudEvent]]) -> list[CloudEvent]:
    """The topics merged in an order that keeps each topic's own order."""
    labels = [topic for topic, events in topics.items() for _ in events]
    if draw(st.booleans()):  # any interleaving
        order = draw(st.permutations(labels))
    else:  # one topic read to its end before the next (a backlog, a held-back topic)
        first = draw(st.permutations(list(TOPICS)))
        order = sorted(labels, key=first.index)
    cursors = {topic: iter(events) for topic, events in topics.items()}
    return [next(cursors[topic]) for topic in order]


def event_time_order(topics: dict[str, list[CloudEvent]]) -> list[CloudEvent]:
    """Every event sorted by (time, id): the reference order."""
    return sorted((e for events in topics.values() for e in events), key=lambda e: (e.time, e.id))


def handled(events: Sequence[CloudEvent], repo: InMemoryRepository | None = None
            ) -> InMemoryRepository:
    """The events handled one at a time by a fresh service."""
    repo = repo if repo is not None else InMemoryRepository()
    service = LifecycleService(repo, POLICY)
    for event in events:
        service.handle(event)
    return repo


def view(repo: InMemoryRepository) -> dict[str, Any]:
    """What must not depend on the interleaving: per account, in comparable form."""
    signals: dict[str, Any] = {}
    for signal in repo.signals:
        signals.setdefault(signal.id, signal)
    stage_changes: dict[str, list[Any]] = defaultdict(list)
    for change in repo.stage_changes:
        stage_changes[change.account_id].append(change)
    health: dict[str, list[Any]] = defaultdict(list)
    for h in repo.health_changes:
        health[h.account_id].append(h)
    timeline: dict[str, list[Any]] = defaultdict(list)
    for account_id, event in repo.events:
        timeline[account_id].append(event.key)
    return {"accounts": {k: a.model_dump(mode="json") for k, a in repo.accounts.items()},
            "stage_changes": dict(stage_changes), "health_changes": dict(health),
            "signals": signals, "timeline": dict(timeline),
            "parked": {k: v for k, v in repo.parked.items() if v},
            "processed": set(repo.processed)}
