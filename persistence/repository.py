"""SQLAlchemy implementation of the lifecycle repository, plus the consumer's offset ledger."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, delete, func, insert, select, tuple_, update
from sqlalchemy.orm import Session

from laer_domain.events import CloudEvent
from laer_domain.model import Account, Stage
from laer_domain.resequence import History
from laer_domain.signals import Signal
from persistence import batch_reads, rows
from persistence import history as history_sql
from persistence.rows import orm_values
from persistence.tables import (
    AccountRow,
    AppliedEventRow,
    Base,
    ConsumerOffsetRow,
    HealthChangeRow,
    OutboxRow,
    ParkedEventRow,
    ProcessedEventRow,
    SignalRow,
    StageChangeRow,
)

if TYPE_CHECKING:
    from laer_domain.rules import Outcome


def _utcnow() -> datetime:
    # Processing time for bookkeeping columns only; domain rules never see it.
    return datetime.now(UTC)


class SqlLifecycleRepository:
    """Accounts, their timelines and the dedup ledger, inside the caller's session."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._lock = session.get_bind().dialect.name == "postgresql"

    def get(self, account_id: str) -> Account | None:
        """Load an account (row-locked on PostgreSQL so concurrent consumers serialise)."""
        row = self.session.get(AccountRow, account_id, with_for_update=self._lock or None)
        return None if row is None else rows.account_from_state(row.state)

    def add_or_update(self, account: Account) -> None:
        """Insert or update an account's state and its read-side columns."""
        row = self.session.get(AccountRow, account.id)
        if row is None:
            row = AccountRow(id=account.id)
            self.session.add(row)
        for column, value in orm_values(rows.account_row(account, _utcnow())).items():
            setattr(row, column, value)  # the version is the ORM's (version_id_col)
        self.session.flush([row])

    def is_processed(self, key: tuple[str, str]) -> bool:
        """Whether an event with this (source, id) was handled before."""
        source, event_id = key
        return self.session.get(ProcessedEventRow, (source, event_id)) is not None

    def mark_processed(self, key: tuple[str, str], account_id: str) -> None:
        """Record an event's identity so a redelivery changes nothing."""
        self.session.add(ProcessedEventRow(
            **rows.processed_event_row(key, account_id, _utcnow())))

    def park(self, event: CloudEvent, origin: Mapping[str, Any] | None) -> None:
        """Keep an event for an account that has not landed yet."""
        self.session.add(ParkedEventRow(
            **orm_values(rows.parked_event_row(event, origin, _utcnow()))))

    def take_parked(self, account_id: str) -> list[CloudEvent]:
        """Remove and return the events parked for an account."""
        parked = self.session.scalars(
            select(ParkedEventRow).where(ParkedEventRow.account_id == account_id)
            .order_by(ParkedEventRow.id)
        ).all()
        events = [rows.parked_event_from_row(r.event) for r in parked]
        for r in parked:
            self.session.delete(r)
        return events

    def record(self, outcome: Outcome) -> None:
        """Append signals (each also queued in the outbox), stage and health changes."""
        for change in outcome.stage_changes:
            self.session.add(StageChangeRow(**rows.stage_change_row(change)))
        for health in outcome.health_changes:
            self.session.add(HealthChangeRow(**rows.health_change_row(health)))
        if not outcome.signals:
            return
        self.session.flush()
        fresh, again = [], []
        for signal in outcome.signals:
            stored = self.session.get(SignalRow, signal.id)
            if stored is None:
                fresh.append(signal)
            elif stored.retracted_at is not None:  # raised again after a rebuild dropped it
                again.append(signal.id)
        history_sql.restore_signals(self.session, again)
        self._insert_signals(fresh)

    def _insert_signals(self, signals: list[Signal]) -> None:
        """Store and queue new signals; a signal raised twice is stored once."""
        if not signals:
            return
        self.session.flush()
        seq = self._next_signal_seq()
        for signal in signals:
            if self.session.get(SignalRow, signal.id) is not None:
                continue  # re-derived signal: already stored and queued once
            self.session.add(SignalRow(**rows.signal_row(signal, seq)))
            self.session.flush()  # the outbox row refers to it
            self.session.add(OutboxRow(**rows.outbox_row(signal, _utcnow())))
            seq += 1

    def _next_signal_seq(self) -> int:
        current = self.session.scalar(select(func.max(SignalRow.seq)))
        return int(current or 0) + 1

    def record_event(self, event: CloudEvent, account_id: str) -> None:
        """Append an event to the account's timeline."""
        self.session.add(AppliedEventRow(
            **orm_values(rows.applied_event_row(event, account_id))))

    def timeline(self, account_id: str) -> list[CloudEvent]:
        """The account's timeline rows as events, in the order they were recorded."""
        return batch_reads.timeline(self.session, account_id)

    def upcoming(self, account_id: str) -> list[CloudEvent]:
        """Nothing known ahead: this repository sees one event at a time."""
        return []

    def replace_history(self, account_id: str, history: History) -> None:
        """Replace the account's records by a rebuild's (`persistence.history`)."""
        self.session.flush()
        history_sql.delete_history(self.session, [account_id])
        for change in history.stage_changes:
            self.session.add(StageChangeRow(**rows.stage_change_row(change)))
        for health in history.health_changes:
            self.session.add(HealthChangeRow(**rows.health_change_row(health)))
        for event in history.events:
            self.record_event(event, account_id)
        raised: dict[str, Signal] = {}
        for signal in history.signals:
            raised.setdefault(signal.id, signal)  # the first, as `record` keeps it
        stored = history_sql.stored_signals(self.session, [account_id])
        history_sql.settle(self.session, stored, raised, _utcnow())
        self._insert_signals([s for i, s in raised.items() if i not in stored])

    def live_account_ids(self) -> list[str]:
        """Accounts that time-based rules still concern (not churned)."""
        return list(self.session.scalars(
            select(AccountRow.id).where(AccountRow.stage != Stage.CHURNED.value)
            .order_by(AccountRow.id)))

    def live_ids_after(self, after: str | None, limit: int) -> list[str]:
        """Up to `limit` live account ids after `after` in id order, not locked: a sweep's
        next chunk."""
        query = select(AccountRow.id).where(AccountRow.stage != Stage.CHURNED.value)
        if after is not None:
            query = query.where(AccountRow.id > after)
        return list(self.session.scalars(query.order_by(AccountRow.id).limit(limit)))

    def lock_live(self, ids: list[str]) -> tuple[list[Account], list[str]]:
        """(live accounts among `ids` this transaction locked, ids it skipped), in id order.

        On PostgreSQL the rows are read `FOR UPDATE SKIP LOCKED`: an account another session
        (a consumer's batch) holds right now is skipped, not waited for. SQLite's transaction
        holds the database's write lock, so nothing is skipped there.
        """
        query = select(AccountRow).where(AccountRow.id.in_(ids)).order_by(AccountRow.id)
        if self._lock:
            query = query.with_for_update(skip_locked=True)
        found = list(self.session.scalars(query))  # kept in the session: `add_or_update`
        read = {r.id for r in found}
        accounts = [rows.account_from_state(r.state) for r in found
                    if r.stage != Stage.CHURNED.value]
        return accounts, [i for i in ids if i not in read]

    def landed_ids_with_parked(self) -> list[str]:
        """Accounts that exist yet still have parked events (a concurrent-landing race)."""
        return list(self.session.scalars(
            select(ParkedEventRow.account_id).join(
                AccountRow, AccountRow.id == ParkedEventRow.account_id).distinct()))

    def expired_parked(self, older_than: datetime) -> list[ParkedEventRow]:
        """Parked events nobody claimed within the park window."""
        return list(self.session.scalars(
            select(ParkedEventRow).where(ParkedEventRow.parked_at < older_than)
            .order_by(ParkedEventRow.id)))

    def delete_parked(self, ids: Iterable[int]) -> None:
        """Forget parked events (after they went to the dead-letter topic)."""
        self.session.execute(delete(ParkedEventRow).where(ParkedEventRow.id.in_(list(ids))))


class OffsetLedger:
    """Consumed offsets stored in the same transaction as the state they produced."""

    def __init__(self, session: Session, group_id: str) -> None:
        self.session = session
        self.group_id = group_id
        self._lock = session.get_bind().dialect.name == "postgresql"
        self._table = Base.metadata.tables[ConsumerOffsetRow.__tablename__]
        # next offsets read (and locked) in this transaction; None: no row yet
        self._known: dict[tuple[str, int], int | None] = {}

    def lock(self, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """Read (and on PostgreSQL lock, in a fixed order) the next offsets of partitions.

        One statement for all of them; PostgreSQL locks the rows in the order they are
        sorted, so two consumers cannot lock the same rows in opposite orders.
        """
        wanted = sorted(set(partitions))
        if not wanted:
            return {}
        t = self._table.c
        query = (select(t.topic, t.partition, t.next_offset)
                 .where(t.group_id == self.group_id, tuple_(t.topic, t.partition).in_(wanted))
                 .order_by(t.topic, t.partition))
        if self._lock:
            query = query.with_for_update()
        self._known.update(dict.fromkeys(wanted))
        for topic, partition, next_offset in self.session.execute(query):
            self._known[(topic, partition)] = next_offset
        return {tp: n for tp in wanted if (n := self._known[tp]) is not None}

    def advance(self, topic: str, partition: int, next_offset: int) -> None:
        """Move a partition's next offset forward (never backward)."""
        self.advance_all({(topic, partition): next_offset})

    def advance_all(self, offsets: Mapping[tuple[str, int], int]) -> None:
        """`advance` several partitions: one UPDATE and one INSERT statement at most.

        A partition without a row gets one by INSERT, so two consumers that both started it
        cannot both commit (the second fails on the primary key and retries its batch).
        """
        unread = [tp for tp in offsets if tp not in self._known]
        if unread:
            self.lock(unread)
        t = self._table.c
        updates, inserts = [], []
        for (topic, partition), nxt in offsets.items():
            known = self._known[(topic, partition)]
            if known is None:
                inserts.append({"group_id": self.group_id, "topic": topic,
                                "partition": partition, "next_offset": nxt})
            elif nxt > known:
                updates.append({"g": self.group_id, "t": topic, "p": partition, "n": nxt})
            else:
                continue
            self._known[(topic, partition)] = nxt
        if updates:
            self.session.execute(
                update(self._table).where(t.group_id == bindparam("g"), t.topic == bindparam("t"),
                                          t.partition == bindparam("p"))
                .values(next_offset=bindparam("n")), updates)
        if inserts:
            self.session.execute(insert(self._table), inserts)

    def stored(self) -> dict[tuple[str, int], int]:
        """Every stored next offset of this group."""
        rows = self.session.scalars(
            select(ConsumerOffsetRow).where(ConsumerOffsetRow.group_id == self.group_id))
        return {(r.topic, r.partition): r.next_offset for r in rows}
