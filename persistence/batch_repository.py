"""A batch-scoped lifecycle repository: read once up front, write once at the end.

(Over 300 lines: the buffered reads, the buffered rebuilds and the one write share state.)

`SqlLifecycleRepository` does a few ORM round trips per event (dedup lookup, account load
and rewrite, signal sequence, flushes), which caps ingestion at a couple of hundred events a
second. Inside one consumer transaction the same effects can be computed in memory and
written with a handful of set-based statements:

1. `prefetch` loads (`persistence.batch_reads`), for every account and event of the batch,
   the dedup ledger rows, the account rows (locked `FOR UPDATE` in id order on PostgreSQL,
   so two consumers serialise on an account exactly as the row-at-a-time repository does)
   and the parked events of accounts that do not exist yet and land in this batch. An
   account whose row still has the version stamp this process last wrote or read comes out
   of the `AccountCache` (`persistence.account_cache`) instead of being parsed again from
   its JSON;
2. `LifecycleService` runs unchanged against this object (it implements the service's
   `LifecycleRepository` protocol) and everything it does is buffered. The accounts are the
   batch's own, so its `EventBatch` changes them in place instead of copying them (`reload`
   gives a failed event's account back as its row holds it);
3. `write` stores the result (`persistence.bulk`): one insert/update per touched account
   (its last state, serialized once), and bulk inserts (COPY on PostgreSQL, one executemany
   on SQLite) for signals (skipping stored ids, each queued once in the outbox), stage and
   health changes, the event timeline, the dedup ledger and parked events;
4. after the commit, `committed_accounts` hands the written states to the cache.

A late event rebuilds its account (`laer_domain.resequence`); only then is the account's
timeline read (its rows, plus what this batch buffered for it), and `replace_history`
swaps the account's buffered records for the rebuild's. `write` then deletes the account's
stored history rows before it inserts the buffered ones, and settles its stored signals
(`persistence.history`: retracted, restored, or left alone).

Both repositories map domain objects to rows with `persistence.rows`, so the rows written
are the same (same tables, columns, order within an account, signal sequence numbering);
the consumer tests compare both paths with the domain's in-memory reference.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from laer_domain.events import CloudEvent, EventType
from laer_domain.model import LIVE_STAGES, Account
from laer_domain.resequence import History
from laer_domain.rules import Outcome
from laer_domain.signals import HealthChange, Signal, StageChange
from persistence import batch_reads, rows
from persistence import history as history_sql
from persistence.account_cache import AccountCache, RowStamp
from persistence.bulk import chunks, insert_rows, table_of, update_accounts
from persistence.tables import (
    AccountRow,
    AppliedEventRow,
    HealthChangeRow,
    OutboxRow,
    ParkedEventRow,
    ProcessedEventRow,
    SignalRow,
    StageChangeRow,
)


class ConcurrentUpdate(Exception):
    """Another consumer changed the same rows first; the batch is retried from scratch."""


# an outcome's records without its account (a rebuild's history has none): account id,
# signals, stage changes, health changes
_Records = tuple[str, tuple[Signal, ...], tuple[StageChange, ...], tuple[HealthChange, ...]]


@dataclass
class BatchRepository:
    """The service's repository for one batch inside one transaction."""

    session: Session
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    cache: AccountCache | None = None
    accounts: dict[str, Account | None] = field(default_factory=dict)
    _stored: dict[str, RowStamp] = field(default_factory=dict)
    _dirty: dict[str, Account] = field(default_factory=dict)
    _processed: set[tuple[str, str]] = field(default_factory=set)
    _new_processed: dict[tuple[str, str], str] = field(default_factory=dict)
    _parked_db: dict[str, list[tuple[int, CloudEvent]]] = field(default_factory=dict)
    _parked_new: dict[str, list[tuple[CloudEvent, Mapping[str, Any] | None]]] = field(
        default_factory=dict)
    _taken_ids: list[int] = field(default_factory=list)
    # buffered records, each with its account's generation: a rebuild (`replace_history`)
    # moves the account to a new one and `write` keeps only the current generation's
    _outcomes: list[tuple[_Records, int]] = field(default_factory=list)
    _events: list[tuple[CloudEvent, str, int]] = field(default_factory=list)
    _generation: dict[str, int] = field(default_factory=dict)  # rebuilt accounts only
    _timelines: dict[str, list[CloudEvent]] = field(default_factory=dict)  # read or rebuilt
    _batch_events: dict[str, list[CloudEvent]] = field(default_factory=dict)  # prefetched

    # --- reads, once per batch -------------------------------------------------------------

    def prefetch(self, events: Iterable[CloudEvent]) -> None:
        """Load what the batch's events will look at (see the module docstring)."""
        events = list(events)
        for event in events:
            self._batch_events.setdefault(event.account_id, []).append(event)
        ids = sorted({e.account_id for e in events})
        self._processed.update(self.stored_keys({e.key for e in events}))
        missing = self.prefetch_accounts(ids)
        # Stored parked events are taken only when their account lands, and an account that
        # does not exist lands only through a subscription_started of this batch: the parked
        # events of other missing accounts stay where they are, unread.
        landing = {e.account_id for e in events if e.type == EventType.SUBSCRIPTION_STARTED}
        for row_id, account_id, event in batch_reads.parked_events(
                self.session, [i for i in missing if i in landing]):
            self._parked_db.setdefault(account_id, []).append((row_id, event))

    def stored_keys(self, keys: set[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of these (source, id) keys the dedup ledger holds (a backtest's is in memory)."""
        return batch_reads.processed_keys(self.session, keys)

    def prefetch_accounts(self, ids: list[str]) -> list[str]:
        """Load (and lock) the accounts `ids` (sorted); the ids that have no row."""
        stale: list[str] = []
        for account_id, stamp in batch_reads.account_stamps(self.session, ids):
            self._stored[account_id] = stamp
            cached = self.cache.take(account_id, stamp) if self.cache is not None else None
            if cached is None:
                stale.append(account_id)
            else:
                self.accounts[account_id] = cached
        # the rows are locked: they are as stamped above
        self.accounts.update(batch_reads.account_states(self.session, stale))
        missing = [i for i in ids if i not in self.accounts]
        for account_id in missing:
            self.accounts[account_id] = None
        return missing

    # --- LifecycleRepository ---------------------------------------------------------------

    def get(self, account_id: str) -> Account | None:
        """The account as of this point of the batch (None if it never landed)."""
        if account_id not in self.accounts:  # not prefetched (the consumer prefetches all)
            row = self.session.get(AccountRow, account_id)
            self.accounts[account_id] = (None if row is None
                                         else rows.account_from_state(row.state))
            if row is not None:
                self._stored[account_id] = RowStamp(row.version, row.updated_at)
        return self.accounts[account_id]

    def reload(self, account_id: str) -> Account | None:
        """Parse the account from its row again and hold that (None if it has no row).

        The accounts this repository hands out are the batch's own and are changed in place
        (`LifecycleService.batch(reload=...)`); after a failed event the batch rebuilds an
        account from this. Rows are written only by `write`, and prefetch locked the rows
        that existed, so for those this is the state the batch started from. An account that
        had no row is not locked: another consumer may have inserted it since, and then this
        batch's own insert fails at `write` and the batch is retried. (`Ingestor` rolls a
        batch back on any failed event anyway; the rebuild matters to callers that go on.)
        """
        state = self.session.scalar(select(AccountRow.state).where(AccountRow.id == account_id))
        account = None if state is None else rows.account_from_state(state)
        self.accounts[account_id] = account
        return account

    def add_or_update(self, account: Account) -> None:
        """Buffer the account's new state (only the last one is written)."""
        self.accounts[account.id] = account
        self._dirty[account.id] = account

    def is_processed(self, key: tuple[str, str]) -> bool:
        """Whether (source, id) was handled before or earlier in this batch."""
        return key in self._processed or key in self._new_processed

    def mark_processed(self, key: tuple[str, str], account_id: str) -> None:
        """Remember (source, id)."""
        self._new_processed[key] = account_id

    def park(self, event: CloudEvent, origin: Mapping[str, Any] | None) -> None:
        """Keep an event for an account that has not landed yet."""
        self._parked_new.setdefault(event.account_id, []).append((event, origin))

    def take_parked(self, account_id: str) -> list[CloudEvent]:
        """Remove and return the stored and just-parked events of an account."""
        stored = self._parked_db.pop(account_id, [])
        self._taken_ids.extend(row_id for row_id, _ in stored)
        fresh = self._parked_new.pop(account_id, [])
        return [e for _, e in stored] + [e for e, _ in fresh]

    def record(self, outcome: Outcome) -> None:
        """Buffer an outcome's signals, stage and health changes."""
        account_id = outcome.account.id
        self._outcomes.append(((account_id, outcome.signals, outcome.stage_changes,
                                outcome.health_changes), self._generation.get(account_id, 0)))

    def record_event(self, event: CloudEvent, account_id: str) -> None:
        """Buffer an event for the account's timeline."""
        self._events.append((event, account_id, self._generation.get(account_id, 0)))
        timeline = self._timelines.get(account_id)
        if timeline is not None:
            timeline.append(event)

    def live_account_ids(self) -> list[str]:
        """Live accounts known to this batch (sweeps do not run through batches)."""
        return sorted(a.id for a in self.accounts.values() if a and a.stage in LIVE_STAGES)

    def timeline(self, account_id: str) -> list[CloudEvent]:
        """The account's timeline: its stored rows, then what this batch recorded for it."""
        timeline = self._timelines.get(account_id)
        if timeline is None:
            generation = self._generation.get(account_id, 0)
            timeline = [*batch_reads.timeline(self.session, account_id),
                        *(e for e, owner, g in self._events
                          if owner == account_id and g == generation)]
            self._timelines[account_id] = timeline
        return list(timeline)

    def upcoming(self, account_id: str) -> list[CloudEvent]:
        """The account's events in this batch (handled ones too: the service skips those)."""
        return list(self._batch_events.get(account_id, ()))

    def replace_history(self, account_id: str, history: History) -> None:
        """Buffer a rebuild's records in place of everything known of the account's."""
        generation = self._generation[account_id] = self._generation.get(account_id, 0) + 1
        self._outcomes.append(((account_id, history.signals, history.stage_changes,
                                history.health_changes), generation))
        self._events.extend((event, account_id, generation) for event in history.events)
        self._timelines[account_id] = list(history.events)

    # --- the write, once per batch ---------------------------------------------------------

    def write(self) -> int:
        """Store everything buffered; returns the number of new signals."""
        s = self.session
        now = self.now
        self._write_accounts()
        current = self._generation
        outcomes = [r for r, g in self._outcomes if not current or g == current.get(r[0], 0)]
        events = [(e, a) for e, a, g in self._events if not current or g == current.get(a, 0)]
        # one pass over the outcomes (most have no stage change, many no signal)
        unique: dict[str, Signal] = {}
        stage_changes: list[rows.Row] = []
        health_changes: list[rows.Row] = []
        for _, raised, changes, healths in outcomes:
            if changes:
                stage_changes += map(rows.stage_change_row, changes)
            if healths:
                health_changes += map(rows.health_change_row, healths)
            for signal in raised:
                unique.setdefault(signal.id, signal)  # the first, as the ORM path keeps it
        if current:  # rebuilt accounts: their stored history gives way to the rebuild's
            history_sql.delete_history(s, current)
            history_sql.settle(s, history_sql.stored_signals(s, current),
                               {i: x for i, x in unique.items() if x.account_id in current},
                               now)
        signals = self._unstored(unique)
        if signals:
            seq = int(s.scalar(select(func.max(SignalRow.seq))) or 0) + 1
            insert_rows(s, table_of(SignalRow),
                        [rows.signal_row(signal, seq + n) for n, signal in enumerate(signals)])
            insert_rows(s, table_of(OutboxRow),
                        [rows.outbox_row(signal, now) for signal in signals])
        insert_rows(s, table_of(StageChangeRow), stage_changes)
        insert_rows(s, table_of(HealthChangeRow), health_changes)
        insert_rows(s, table_of(AppliedEventRow), [
            rows.applied_event_row(e, account_id) for e, account_id in events])
        insert_rows(s, table_of(ProcessedEventRow), [
            rows.processed_event_row(key, account_id, now)
            for key, account_id in self._new_processed.items()])
        insert_rows(s, table_of(ParkedEventRow), [
            rows.parked_event_row(e, origin, now)
            for items in self._parked_new.values() for e, origin in items])
        for part in chunks(self._taken_ids):
            s.execute(delete(ParkedEventRow).where(ParkedEventRow.id.in_(part)))
        return len(signals)

    def _write_accounts(self) -> None:
        """Each changed account's last state: an insert, or an update guarded by version."""
        inserts, updates = [], []
        for account_id, account in self._dirty.items():
            row = rows.account_row(account, self.now)  # serialized once per account and batch
            stored = self._stored.get(account_id)
            if stored is None:
                inserts.append({**row, "version": 1})
            else:  # the row's id and state under the names `update_accounts` takes
                update = {"b_id": row.pop("id"), "b_state": row.pop("state"),
                          "b_version": stored.version, "version": stored.version + 1}
                updates.append({**update, **row})
        insert_rows(self.session, table_of(AccountRow), inserts)
        if updates and update_accounts(self.session, updates) != len(updates):
            raise ConcurrentUpdate("an account changed under this batch")

    def _unstored(self, signals: dict[str, Signal]) -> list[Signal]:
        """The signals (by id) whose ids are not stored yet (a re-derived one is not new).

        A stored one that a rebuild had retracted is raised again: it is restored.
        """
        existing: set[str] = set()
        again: list[str] = []
        for part in chunks(list(signals)):
            for signal_id, retracted_at in self.session.execute(
                    select(SignalRow.id, SignalRow.retracted_at).where(SignalRow.id.in_(part))):
                existing.add(signal_id)
                if retracted_at is not None:
                    again.append(signal_id)
        history_sql.restore_signals(self.session, again)
        return [signal for signal in signals.values() if signal.id not in existing]

    def committed_accounts(self) -> list[tuple[str, RowStamp, Account]]:
        """Each account this batch read or wrote, with the stamp its row has after `write`.

        Only true once the transaction committed; `Ingestor` then hands these to the cache.
        """
        items = []
        for account_id, account in self.accounts.items():
            if account is None:
                continue
            stored = self._stored.get(account_id)
            if account_id in self._dirty:
                stamp = RowStamp(1 if stored is None else stored.version + 1, self.now)
            elif stored is None:  # pragma: no cover - an account is read from its row
                continue
            else:
                stamp = stored
            items.append((account_id, stamp, account))
        return items
