"""Application service: dedup, park, apply and record events over a repository."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from laer_domain.events import CloudEvent, EventType
from laer_domain.model import LIVE_STAGES, Account, Stage, copy_account
from laer_domain.policy import Policy
from laer_domain.rules import Outcome, apply_event_in_place, sweep
from laer_domain.signals import HealthChange, Signal, StageChange


class LifecycleRepository(Protocol):
    """Storage the service needs; implemented in memory here and by persistence/."""

    def get(self, account_id: str) -> Account | None:
        """Return the account or None if it never landed."""
        ...

    def add_or_update(self, account: Account) -> None:
        """Store the new state of an account."""
        ...

    def is_processed(self, key: tuple[str, str]) -> bool:
        """Return True if the event (source, id) was already handled."""
        ...

    def mark_processed(self, key: tuple[str, str], account_id: str) -> None:
        """Remember that the event (source, id) was handled."""
        ...

    def park(self, event: CloudEvent, origin: Mapping[str, Any] | None) -> None:
        """Keep an event for an account that has not landed yet."""
        ...

    def take_parked(self, account_id: str) -> list[CloudEvent]:
        """Remove and return the parked events of an account."""
        ...

    def record(self, outcome: Outcome) -> None:
        """Append the signals, stage changes and health changes of an outcome."""
        ...

    def record_event(self, event: CloudEvent, account_id: str) -> None:
        """Append an applied event to the account's timeline."""
        ...

    def live_account_ids(self) -> list[str]:
        """Return the ids of accounts that have not churned."""
        ...


@dataclass
class InMemoryRepository:
    """A dict-backed repository for tests and playbook authors."""

    accounts: dict[str, Account] = field(default_factory=dict)
    processed: dict[tuple[str, str], str] = field(default_factory=dict)
    parked: dict[str, list[tuple[CloudEvent, Mapping[str, Any] | None]]] = field(
        default_factory=dict
    )
    signals: list[Signal] = field(default_factory=list)
    stage_changes: list[StageChange] = field(default_factory=list)
    health_changes: list[HealthChange] = field(default_factory=list)
    events: list[tuple[str, CloudEvent]] = field(default_factory=list)

    def get(self, account_id: str) -> Account | None:
        """Return the account or None."""
        return self.accounts.get(account_id)

    def add_or_update(self, account: Account) -> None:
        """Store the account."""
        self.accounts[account.id] = account

    def is_processed(self, key: tuple[str, str]) -> bool:
        """Return True if the key was handled."""
        return key in self.processed

    def mark_processed(self, key: tuple[str, str], account_id: str) -> None:
        """Remember the key."""
        self.processed[key] = account_id

    def park(self, event: CloudEvent, origin: Mapping[str, Any] | None) -> None:
        """Park an event with its origin."""
        self.parked.setdefault(event.subject, []).append((event, origin))

    def take_parked(self, account_id: str) -> list[CloudEvent]:
        """Remove and return parked events."""
        return [event for event, _ in self.parked.pop(account_id, [])]

    def record(self, outcome: Outcome) -> None:
        """Append outcome records."""
        self.signals.extend(outcome.signals)
        self.stage_changes.extend(outcome.stage_changes)
        self.health_changes.extend(outcome.health_changes)

    def record_event(self, event: CloudEvent, account_id: str) -> None:
        """Append to the timeline."""
        self.events.append((account_id, event))

    def live_account_ids(self) -> list[str]:
        """Return live account ids, sorted."""
        return sorted(a.id for a in self.accounts.values() if a.stage in LIVE_STAGES)


@dataclass(frozen=True)
class HandleResult:
    """What handling one event did."""

    status: Literal["applied", "duplicate", "parked"]
    outcomes: tuple[Outcome, ...] = ()

    @property
    def signals(self) -> tuple[Signal, ...]:
        """Return every signal of every outcome, in order."""
        return tuple(s for o in self.outcomes for s in o.signals)


class LifecycleService:
    """Handles validated events and sweeps for a repository, using the pure rules."""

    def __init__(self, repo: LifecycleRepository, policy: Policy) -> None:
        """Use `repo` for storage and `policy` for thresholds."""
        self.repo = repo
        self.policy = policy

    def handle(self, event: CloudEvent, origin: Mapping[str, Any] | None = None) -> HandleResult:
        """Apply one event: duplicates are skipped, early events parked until landing."""
        return self.batch().handle(event, origin)

    def apply_parked(self, account_id: str) -> list[Outcome]:
        """Apply a landed account's parked events, as its landing does (see `EventBatch`)."""
        return self.batch().apply_parked(account_id)

    def batch(self, reload: Callable[[str], Account | None] | None = None) -> EventBatch:
        """A handler for a run of events that copies each account once for the whole run.

        With `reload`, the repository's accounts are the run's own and are changed in place,
        not copied (see `EventBatch`).
        """
        return EventBatch(self, reload)

    def sweep(self, at: datetime) -> list[Outcome]:
        """Apply due time-based rules to every live account as of `at`."""
        outcomes: list[Outcome] = []
        for account_id in self.repo.live_account_ids():
            account = self.repo.get(account_id)
            if account is None:
                continue
            outcome = sweep(account, at, self.policy)
            if outcome.account != account:
                self.repo.add_or_update(outcome.account)
                self.repo.record(outcome)
            outcomes.append(outcome)
        return outcomes


class EventBatch:
    """Applies and records a run of events, one working copy per account for the whole run.

    An account is copied once, on its first event in the batch (a copy per event would be
    most of an event's cost), and that working copy is changed in place by the account's
    later events. `LifecycleService.handle` is a batch of one event. However events are cut
    into batches, the repository gets the same writes with the same values in the same order
    (duplicates and parked events included; an account is read once per batch), so the
    states, signals and records are the same. An outcome's `account` is the account's working
    copy: once the batch moved on it holds the state after the account's latest event, not
    after that outcome's event (with `reload`, below, later batches go on changing it too).

    An event whose rules raise leaves no half-applied account: its account is rebuilt as it
    was before that event (the batch's earlier events of the account are replayed on a fresh
    copy; the rules are deterministic) and the exception propagates. Events handled before it
    keep their effects; the batch can go on with later events.

    A repository whose accounts nobody else holds (the consumer's batch store: parsed from
    their rows, or taken out of its cache) passes `reload`, and the copy is skipped: the
    accounts `get` returns are changed in place. `reload(account_id)` must return the account
    as stored before the batch, as a new object that the repository holds from then on; a
    failed event is rebuilt from it. If `reload` itself fails, its exception propagates, with
    the rule's as its context.
    """

    def __init__(self, service: LifecycleService,
                 reload: Callable[[str], Account | None] | None = None) -> None:
        """Handle events for `service`'s repository and policy."""
        self._repo = service.repo
        self._policy = service.policy
        self._reload = reload
        self._working: dict[str, Account] = {}
        # account id -> (state at the batch's first touch, events applied to it since)
        self._history: dict[str, tuple[Account | None, list[CloudEvent]]] = {}

    def handle(self, event: CloudEvent, origin: Mapping[str, Any] | None = None) -> HandleResult:
        """Apply one event: duplicates are skipped, early events parked until landing."""
        if self._repo.is_processed(event.key):
            return HandleResult("duplicate")
        account_id = event.account_id
        account = self._account(account_id)
        landing = event.type == EventType.SUBSCRIPTION_STARTED
        if account is None and not landing:
            self._repo.park(event, origin)
            self._repo.mark_processed(event.key, account_id)
            return HandleResult("parked")
        outcome = self._apply(account_id, event)
        self._repo.mark_processed(event.key, account_id)
        outcomes = [outcome]
        if any(change.to_stage is Stage.LAND for change in outcome.stage_changes):
            outcomes.extend(self.apply_parked(account_id))
        return HandleResult("applied", tuple(outcomes))

    def apply_parked(self, account_id: str) -> list[Outcome]:
        """Apply the account's parked events in event-time order; none if it has not landed.

        The events were marked processed when they were parked. The account is read before
        the parked events are taken.
        """
        if self._account(account_id) is None:
            return []
        parked = sorted(self._repo.take_parked(account_id), key=lambda e: (e.time, e.id))
        return [self._apply(account_id, early) for early in parked]

    def _account(self, account_id: str) -> Account | None:
        if account_id not in self._history:
            base = self._repo.get(account_id)
            self._history[account_id] = (base, [])
            if base is not None:
                self._working[account_id] = (base if self._reload is not None
                                             else copy_account(base))
        return self._working.get(account_id)

    def _apply(self, account_id: str, event: CloudEvent) -> Outcome:
        try:
            outcome = apply_event_in_place(self._working.get(account_id), event, self._policy)
        except BaseException:
            self._rebuild(account_id)
            raise
        self._working[account_id] = outcome.account
        self._history[account_id][1].append(event)
        self._repo.add_or_update(outcome.account)
        self._repo.record(outcome)
        self._repo.record_event(event, event.account_id)
        return outcome

    def _rebuild(self, account_id: str) -> None:
        base, applied = self._history[account_id]
        if self._reload is not None:  # `base` is the half-applied working copy itself
            account = self._reload(account_id)
        else:
            account = None if base is None else copy_account(base)
        for event in applied:
            account = apply_event_in_place(account, event, self._policy).account
        if account is None:
            self._working.pop(account_id, None)
            return
        self._working[account_id] = account
        if applied:  # the repository holds the half-applied working copy
            self._repo.add_or_update(account)


def in_memory_service(policy: Policy | None = None) -> LifecycleService:
    """Return a service over a fresh InMemoryRepository (tests, playbook authors)."""
    return LifecycleService(InMemoryRepository(), policy or Policy())
