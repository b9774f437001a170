"""A dict-backed lifecycle repository: the service's reference store for tests and authors."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from laer_domain.events import CloudEvent
from laer_domain.model import LIVE_STAGES, Account
from laer_domain.resequence import History
from laer_domain.signals import HealthChange, Signal, StageChange

if TYPE_CHECKING:
    from laer_domain.rules import Outcome


@dataclass
class InMemoryRepository:
    """A dict-backed repository for tests and playbook authors.

    `signals` holds the signals in force; a rebuild moves those it no longer raises to
    `retracted` (by id).
    """

    accounts: dict[str, Account] = field(default_factory=dict)
    processed: dict[tuple[str, str], str] = field(default_factory=dict)
    parked: dict[str, list[tuple[CloudEvent, Mapping[str, Any] | None]]] = field(
        default_factory=dict
    )
    signals: list[Signal] = field(default_factory=list)
    stage_changes: list[StageChange] = field(default_factory=list)
    health_changes: list[HealthChange] = field(default_factory=list)
    events: list[tuple[str, CloudEvent]] = field(default_factory=list)
    retracted: dict[str, Signal] = field(default_factory=dict)

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

    def timeline(self, account_id: str) -> list[CloudEvent]:
        """The account's timeline, in the order it was recorded."""
        return [event for owner, event in self.events if owner == account_id]

    def upcoming(self, account_id: str) -> list[CloudEvent]:
        """Nothing known ahead: each event comes on its own."""
        return []

    def replace_history(self, account_id: str, history: History) -> None:
        """Replace the account's records by `history`'s; retract the signals it drops."""
        raised = {s.id for s in history.signals}
        for signal in self.signals:
            if signal.account_id == account_id and signal.id not in raised:
                self.retracted[signal.id] = signal
        for signal_id in raised:
            self.retracted.pop(signal_id, None)
        # lists changed in place: callers may hold them
        self.signals[:] = [*_others(self.signals, account_id), *history.signals]
        self.stage_changes[:] = [*_others(self.stage_changes, account_id),
                                 *history.stage_changes]
        self.health_changes[:] = [*_others(self.health_changes, account_id),
                                  *history.health_changes]
        self.events[:] = [*(item for item in self.events if item[0] != account_id),
                          *((account_id, event) for event in history.events)]


def _others(records: list[Any], account_id: str) -> list[Any]:
    return [r for r in records if r.account_id != account_id]
