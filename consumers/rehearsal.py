"""A parked event is tried on arrival as its account's landing will apply it.

Parking skips the rules, so an event they cannot apply would be stored quietly and then fail
its account's landing batch on every retry: the account would never land. Instead the event
takes the same path now, on a stand-in account that lands just before it: the storage round
trip of a parked row, the rules, and the serialisation of what they produce. If that raises,
the event is a record failure and is dead-lettered, not parked.
"""

from __future__ import annotations

import json
from datetime import timedelta

from laer_domain.events import CloudEvent, EventType, make_event, parse_event
from laer_domain.model import Account
from laer_domain.policy import Policy
from laer_domain.service import InMemoryRepository, LifecycleService
from laer_domain.wire import EARLIEST_INSTANT, LATEST_INSTANT
from persistence import rows

SOURCE = "laer.consumer.rehearsal"


def _stand_in_landing(event: CloudEvent) -> CloudEvent:
    """A subscription_started for the event's account a day before it, within the calendar."""
    start = max(EARLIEST_INSTANT, event.time - timedelta(days=1))
    end = min(LATEST_INSTANT, event.time + timedelta(days=365))
    return parse_event(make_event(EventType.SUBSCRIPTION_STARTED, event.subject, start, {
        "plan": "rehearsal", "seats": 1, "mrr": 0, "currency": "EUR",
        "term_start": start, "term_end": end}, id=f"rehearsal:{event.id}", source=SOURCE))


def rehearse_parked(event: CloudEvent, policy: Policy) -> None:
    """Raise whatever applying `event` after its account lands would raise; else nothing."""
    stored = rows.parked_event_from_row(json.loads(rows.parked_event_row(
        event, None, event.time)["event"]))
    repo = InMemoryRepository()
    service = LifecycleService(repo, policy)
    service.handle(_stand_in_landing(stored))
    result = service.handle(stored)
    for outcome in result.outcomes:  # what the batch write serialises
        rows.account_row(outcome.account, stored.time)
        for n, signal in enumerate(outcome.signals):
            rows.signal_row(signal, n)
    rows.applied_event_row(stored, stored.account_id)


def failing_parked(account: Account | None, landing: CloudEvent | None,
                   parked: list[tuple[int, CloudEvent]], policy: Policy
                   ) -> list[tuple[int, BaseException]]:
    """Which parked events (by row id) the rules cannot apply to this account, and why.

    The account (as stored, or None) takes the `landing`, if any, then the parked events in
    event-time order as a landing applies them; each that raises is left out, the rest go on.
    """
    repo = InMemoryRepository()
    if account is not None:
        repo.add_or_update(account)
    service = LifecycleService(repo, policy)
    if landing is not None:
        service.handle(landing)
    failed: list[tuple[int, BaseException]] = []
    for row_id, event in sorted(parked, key=lambda item: (item[1].time, item[1].id)):
        try:
            for outcome in service.handle(event).outcomes:
                rows.account_row(outcome.account, event.time)
        except Exception as exc:  # the rules' or the serialiser's: this event's fault
            failed.append((row_id, exc))
    return failed
