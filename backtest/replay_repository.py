"""The consumer's batch repository as the backtest drives it: several windows of events in one
transaction, the dedup ledger held in memory, and sweeps that moved only an account's clock
left unwritten."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from laer_domain.events import CloudEvent
from laer_domain.model import Account
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

    While `sweeping`, an account the sweep changed in nothing but its clock (most accounts on
    most days) is not written: the engine keeps its new clock in `lagging` (account id ->
    the clock its row lacks), every account read here gets that clock back, and the engine
    writes the lagging rows before the run ends. Only the rules read the clock, and they
    read the accounts this repository hands out, so nothing else sees the difference.
    """

    ledger: set[Key] | None = None
    through: EventKey | None = None
    lagging: dict[str, datetime] = field(default_factory=dict)
    sweeping: bool = False
    moved: dict[str, datetime] = field(default_factory=dict)  # clock-only sweeps, this batch

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

    def written_accounts(self) -> list[str]:
        """The accounts whose rows this transaction writes."""
        return list(self._dirty)

    def _caught_up(self, account: Account | None) -> Account | None:
        if account is not None and (clock := self.lagging.get(account.id)) is not None:
            account.clock = clock
        return account

    def prefetch_accounts(self, ids: list[str]) -> list[str]:
        """Load the accounts, each with its clock (see the class docstring)."""
        missing = super().prefetch_accounts(ids)
        for account_id in ids:
            self._caught_up(self.accounts.get(account_id))
        return missing

    def get(self, account_id: str) -> Account | None:
        """The account, with its clock."""
        return self._caught_up(super().get(account_id))

    def reload(self, account_id: str) -> Account | None:
        """The account as its row holds it, with its clock."""
        return self._caught_up(super().reload(account_id))

    def add_or_update(self, account: Account) -> None:
        """Buffer the new state, unless a sweep moved only its clock (then keep it here)."""
        before = self.accounts.get(account.id)
        if (self.sweeping and before is not None and account.clock != before.clock
                and account.model_copy(update={"clock": before.clock}) == before):
            self.accounts[account.id] = account
            self.moved[account.id] = account.clock
            return
        self.moved.pop(account.id, None)
        super().add_or_update(account)
