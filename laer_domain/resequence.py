"""Event-time order per account, whatever order the topics are read in.

One account's events come on three topics and Kafka orders records only within a partition,
so a backlog can bring an account's billing event after usage events weeks later in event
time. Such an event is *late*: it sorts, by `event_key`, before the latest event the account
has on its timeline, or before the account's clock (a sweep moved it on). A late event is
not applied on top. The account is rebuilt instead: its timeline plus the late event, sorted,
replayed from nothing through the same logic that handles every event (parking before the
landing, win-backs), then swept to the old clock if a sweep had taken it further
(`EventBatch` does this; the repository replaces the account's history with the result). The
rebuilt state is by construction the one the account's events give in event-time order.

Signal ids are deterministic, so the repository compares the rebuilt signals with the stored
ones: a stored signal the rebuild no longer raises is retracted (never dispatched, and its
playbook stops), one it raises again stays as it is, a new one is stored and queued.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from laer_domain.events import CloudEvent
from laer_domain.model import Account
from laer_domain.policy import Policy
from laer_domain.signals import HealthChange, Signal, StageChange

EventKey = tuple[datetime, str, str]
"""(time, id, source): the order events are applied in; id and source break ties."""


def event_key(event: CloudEvent) -> EventKey:
    """The event's place in event-time order."""
    return (event.time, event.id, event.source)


def batch_order(item: object) -> tuple[int, EventKey | None]:
    """Sort key for a batch's items: anything not an event first, then events by `event_key`."""
    if isinstance(item, CloudEvent):
        return (1, event_key(item))
    return (0, None)


def is_late(account: Account, event: CloudEvent) -> bool:
    """Whether applying `event` on top of `account` would break event-time order."""
    if event.time < account.clock:
        return True
    latest = account.latest
    return latest is not None and event_key(event) < latest


def later(latest: EventKey | None, event: CloudEvent) -> EventKey:
    """The latest of `latest` and the event's key."""
    key = event_key(event)
    return key if latest is None or key > latest else latest


@dataclass(frozen=True)
class History:
    """An account's records as a rebuild gives them, each in the order they were produced.

    `events` is the account's timeline (every event applied or recorded on it); `signals`
    may hold a re-derived signal more than once, as handling gives them (stores keep one).
    """

    signals: tuple[Signal, ...]
    stage_changes: tuple[StageChange, ...]
    health_changes: tuple[HealthChange, ...]
    events: tuple[CloudEvent, ...]


def replay(account_id: str, events: Iterable[CloudEvent], policy: Policy,
           swept: datetime | None = None) -> tuple[Account | None, History]:
    """The account and its records from handling `events` in event-time order from nothing.

    `swept`: the instant a sweep had taken the account to; it is swept there again, after
    the events before it and before the others (a rebuild sweeps once, to the latest sweep,
    so the health records of earlier sweeps between events are not replayed).
    """
    # imported here: the service and the in-memory store use this module
    from laer_domain.memory import InMemoryRepository
    from laer_domain.service import EventBatch, LifecycleService

    scratch = InMemoryRepository()
    service = LifecycleService(scratch, policy)
    batch = EventBatch(service, resequence=False)
    pending = swept
    for event in sorted(events, key=event_key):
        if pending is not None and event.time >= pending:
            service.sweep(pending)  # the only account in `scratch`
            pending = None
        batch.handle(event)
    if pending is not None:
        service.sweep(pending)
    return scratch.get(account_id), History(
        signals=tuple(scratch.signals), stage_changes=tuple(scratch.stage_changes),
        health_changes=tuple(scratch.health_changes),
        events=tuple(event for _, event in scratch.events))
