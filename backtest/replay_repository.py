"""The consumer's batch repository as the backtest drives it: several windows of events in one
transaction, and the dedup ledger held in memory."""

from __future__ import annotations

from dataclasses import dataclass

from laer_domain.events import CloudEvent
from laer_domain.resequence import EventKey, event_key
from persistence.batch_repository import BatchRepository

Key = tuple[str, str]


@dataclass
class ReplayRepository(BatchRepository):
    """`BatchRepository` for a transaction that may hold several of the engine's windows.

    The whole run of windows is prefetched at once, but the engine may stop after any of
    them (one that raised signals: they are dispatched at its end); `through` is the last
    event of the window in hand, and a rebuild takes in (`upcoming`) none of the account's
    events after it, so an event not handled here is never applied here either.

    With `ledger`, the processed keys are looked up there instead of in the database: the
    engine is the only writer of its database's ledger and adds each committed transaction's
    keys (`written_keys`) to the set.
    """

    ledger: set[Key] | None = None
    through: EventKey | None = None

    def stored_keys(self, keys: set[Key]) -> set[Key]:
        """The keys the ledger holds (the engine's copy, or the table)."""
        if self.ledger is None:
            return super().stored_keys(keys)
        return keys & self.ledger

    def upcoming(self, account_id: str) -> list[CloudEvent]:
        """The account's prefetched events up to `through`."""
        events = super().upcoming(account_id)
        if self.through is None:
            return events
        through = self.through
        return [e for e in events if event_key(e) <= through]

    def written_keys(self) -> list[Key]:
        """The keys this transaction adds to the ledger."""
        return list(self._new_processed)
