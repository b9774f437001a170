"""Application service: dedup, park, apply (in event-time order) and record events.

Over 300 lines: `EventBatch`'s apply, failure rollback and rebuild paths share its working
copies and are kept together.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from laer_domain.events import CloudEvent, EventType
from laer_domain.memory import InMemoryRepository
from laer_domain.model import Account, Stage, copy_account
from laer_domain.policy import Policy
from laer_domain.resequence import History, event_key, is_late, later, replay
from laer_domain.rules import Outcome, apply_event_in_place, sweep
from laer_domain.signals import Signal

__all__ = ["EventBatch", "HandleResult", "InMemoryRepository", "LifecycleRepository",
           "LifecycleService", "in_memory_service"]


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

    def timeline(self, account_id: str) -> list[CloudEvent]:
        """Return every event applied or recorded on the account, as recorded."""
        ...

    def upcoming(self, account_id: str) -> list[CloudEvent]:
        """Return the account's events the caller will hand over later in this run, if known.

        The consumer's batch store knows its batch; a rebuild takes these in at once instead
        of rebuilding once per late event. Events already handled may be among them (they
        are skipped); [] when the store cannot tell.
        """
        ...

    def replace_history(self, account_id: str, history: History) -> None:
        """Replace the account's stage changes, health changes and timeline by `history`'s.

        Its signals become `history.signals`: a stored one not among them is retracted (kept,
        marked, and never dispatched if still queued), one among them stays as stored and is
        never queued twice (a retracted one is restored), a new one is stored and queued.
        Only called after a rebuild (`laer_domain.resequence`), never on the in-order path.
        """
        ...


@dataclass(frozen=True)
class HandleResult:
    """What handling one event did."""

    # resequenced: a late event, applied by rebuilding its account (`laer_domain.resequence`);
    # its one outcome is the account's whole rebuilt history
    status: Literal["applied", "duplicate", "parked", "resequenced"]
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

    def sweep(self, at: datetime, accounts: Iterable[Account] | None = None) -> list[Outcome]:
        """Apply due time-based rules as of `at` to `accounts` (the caller read and locked
        them, a chunk at a time), or to every live account of the repository."""
        outcomes: list[Outcome] = []
        if accounts is None:
            accounts = (a for i in self.repo.live_account_ids() if (a := self.repo.get(i)))
        for account in accounts:
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

    A late event (`laer_domain.resequence.is_late`) rebuilds its account: the account's
    timeline and the event, sorted, are replayed by a fresh batch over a scratch repository,
    and the result replaces the account and its history. Only a late event reads the
    timeline. So whatever order an account's events arrive in, its state and records end as
    those of its events handled in event-time order. A store that knows the run's events
    (`upcoming`) lets one rebuild take in all of an account's events of the run; the writes
    then differ from those of one event at a time, the state they leave does not.

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
                 reload: Callable[[str], Account | None] | None = None, *,
                 resequence: bool = True) -> None:
        """Handle events for `service`'s repository and policy (`resequence`: rebuild on late
        events; off only for a rebuild's own replay, whose events come sorted)."""
        self._repo = service.repo
        self._policy = service.policy
        self._reload = reload
        self._resequence = resequence
        self._working: dict[str, Account] = {}
        # account id -> (state at the batch's first touch, events applied to it since)
        self._history: dict[str, tuple[Account | None, list[CloudEvent]]] = {}
        # rebuilt in this batch: a failure rolls back to the rebuilt copy, not to `reload`
        self._rebased: set[str] = set()
        # events a rebuild took in ahead of their turn (key -> whether they were late)
        self._folded: dict[tuple[str, str], bool] = {}

    def handle(self, event: CloudEvent, origin: Mapping[str, Any] | None = None) -> HandleResult:
        """Apply one event: duplicates are skipped, early events parked until landing, late
        events re-sequenced."""
        if self._repo.is_processed(event.key):
            return HandleResult("duplicate")
        account_id = event.account_id
        folded = self._folded.pop(event.key, None)
        if folded is not None:  # an earlier rebuild of this batch applied it already
            self._repo.mark_processed(event.key, account_id)
            return HandleResult("resequenced" if folded else "applied")
        account = self._account(account_id)
        if account is not None and self._resequence and is_late(account, event):
            rebuilt = self._resequenced(account_id, [event])
            if rebuilt is not None:
                self._repo.mark_processed(event.key, account_id)
                return HandleResult("resequenced", (rebuilt,))
        landing = event.type == EventType.SUBSCRIPTION_STARTED
        if account is None and not landing:
            self._repo.park(event, origin)
            self._repo.mark_processed(event.key, account_id)
            return HandleResult("parked")
        outcome = self._apply(account_id, event)
        self._repo.mark_processed(event.key, account_id)
        outcomes = [outcome]
        if any(change.to_stage is Stage.LAND for change in outcome.stage_changes):
            outcomes.extend(self._drain(account_id))
        return HandleResult("applied", tuple(outcomes))

    def apply_parked(self, account_id: str) -> list[Outcome]:
        """Apply the account's parked events in event-time order; none if it has not landed.

        The events were marked processed when they were parked. The account is read before
        the parked events are taken. Events parked for an account that landed meanwhile (a
        concurrent landing) sort before what it has applied since: they rebuild it.
        """
        account = self._account(account_id)
        if account is None:
            return []
        parked = sorted(self._repo.take_parked(account_id), key=event_key)
        if self._resequence and any(is_late(account, early) for early in parked):
            rebuilt = self._resequenced(account_id, parked)
            if rebuilt is not None:
                return [rebuilt]
        return [self._apply(account_id, early) for early in parked]

    def _drain(self, account_id: str) -> list[Outcome]:
        """Right after a landing: its parked events, in event-time order, on top of it."""
        parked = sorted(self._repo.take_parked(account_id), key=event_key)
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
        working = self._working.get(account_id)
        latest = None if working is None else working.latest
        try:
            outcome = apply_event_in_place(working, event, self._policy)
        except BaseException:
            self._rebuild(account_id)
            raise
        outcome.account.latest = later(latest, event)  # a win-back's new account included
        self._working[account_id] = outcome.account
        self._history[account_id][1].append(event)
        self._repo.add_or_update(outcome.account)
        self._repo.record(outcome)
        self._repo.record_event(event, event.account_id)
        return outcome

    def _resequenced(self, account_id: str, late: list[CloudEvent]) -> Outcome | None:
        """Rebuild the account with its late events; None if its timeline has no landing.

        The account's other events still to come in this run, if the repository knows them
        (`upcoming`), are taken in too, so a batch rebuilds an account once, not once per
        late event; if that replay fails, it is tried with the late events alone, so only
        their own failure propagates. The replay runs apart from the repository: a rule that
        raises in it leaves the account and the repository as they were.
        """
        before = self._working[account_id]
        timeline = self._repo.timeline(account_id)
        if not any(e.type == EventType.SUBSCRIPTION_STARTED for e in [*timeline, *late]):
            return None  # nothing to rebuild from (a timeline kept from before landings were)
        # a clock past every event on the timeline was moved on by a sweep: replay it too
        swept = before.clock if not timeline or before.clock > max(
            e.time for e in timeline) else None
        known = {e.key for e in timeline} | {e.key for e in late}
        ahead = list({e.key: e for e in self._repo.upcoming(account_id)
                      if e.key not in known and not self._repo.is_processed(e.key)}.values())
        try:
            account, history = replay(account_id, [*timeline, *late, *ahead], self._policy,
                                      swept)
        except Exception:
            if not ahead:
                raise
            ahead = []
            account, history = replay(account_id, [*timeline, *late], self._policy, swept)
        assert account is not None  # the events hold a landing
        self._folded.update((e.key, is_late(before, e)) for e in ahead)
        self._working[account_id] = account
        self._history[account_id] = (copy_account(account), [])
        self._rebased.add(account_id)
        self._repo.add_or_update(account)
        self._repo.replace_history(account_id, history)
        return Outcome(account=account, signals=history.signals,
                       stage_changes=history.stage_changes,
                       health_changes=history.health_changes)

    def _rebuild(self, account_id: str) -> None:
        base, applied = self._history[account_id]
        if self._reload is not None and account_id not in self._rebased:
            account = self._reload(account_id)  # `base` is the half-applied working copy
        else:
            account = None if base is None else copy_account(base)
        for event in applied:
            latest = None if account is None else account.latest
            account = apply_event_in_place(account, event, self._policy).account
            account.latest = later(latest, event)
        if account is None:
            self._working.pop(account_id, None)
            return
        self._working[account_id] = account
        if applied:  # the repository holds the half-applied working copy
            self._repo.add_or_update(account)


def in_memory_service(policy: Policy | None = None) -> LifecycleService:
    """Return a service over a fresh InMemoryRepository (tests, playbook authors)."""
    return LifecycleService(InMemoryRepository(), policy or Policy())
