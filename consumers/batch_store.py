"""A batch-scoped lifecycle repository: read once up front, write once at the end.

`SqlLifecycleRepository` does a few ORM round trips per event (dedup lookup, account load
and rewrite, signal sequence, flushes), which caps ingestion at a couple of hundred events a
second. Inside one consumer transaction the same effects can be computed in memory and
written with a handful of set-based statements:

1. `prefetch` loads, for every account and event of the batch, the dedup ledger rows, the
   account rows (locked `FOR UPDATE` in id order on PostgreSQL, so two consumers serialise on
   an account exactly as the row-at-a-time repository does) and the parked events of accounts
   that do not exist yet;
2. `LifecycleService` runs unchanged against this object (it implements the service's
   `LifecycleRepository` protocol) and everything it does is buffered;
3. `write` stores the result: one insert/update per touched account (its last state), and
   executemany inserts for signals (skipping stored ids, each queued once in the outbox),
   stage and health changes, the event timeline, the dedup ledger and parked events.

The rows written are the ones `SqlLifecycleRepository` writes (same tables, columns, order
within an account, signal sequence numbering); the consumer tests compare both paths with
the domain's in-memory reference.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import psycopg
from sqlalchemy import (
    ARRAY,
    JSON,
    CursorResult,
    String,
    Table,
    any_,
    bindparam,
    delete,
    func,
    insert,
    select,
    tuple_,
    update,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from laer_domain.events import CloudEvent
from laer_domain.model import LIVE_STAGES, Account
from laer_domain.persistence.tables import (
    AccountRow,
    AppliedEventRow,
    Base,
    HealthChangeRow,
    OutboxRow,
    ParkedEventRow,
    ProcessedEventRow,
    SignalRow,
    StageChangeRow,
)
from laer_domain.rules import Outcome


class ConcurrentUpdate(Exception):
    """Another consumer changed the same rows first; the batch is retried from scratch."""


def _table(row: type[Base]) -> Table:
    return Base.metadata.tables[row.__tablename__]


def _insert_rows(session: Session, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert many rows in few round trips.

    On PostgreSQL the rows are streamed with one COPY (values converted as the SQLAlchemy
    column types would bind them); psycopg's executemany sends one statement per row and a
    multi-row VALUES statement costs psycopg and the server a long parse. SQLite's
    executemany is a C loop in process already.
    """
    if not rows:
        return
    if session.get_bind().dialect.name == "postgresql":
        _copy_rows(session, table, rows)
    else:
        session.execute(insert(table), rows)


def _copy_rows(session: Session, table: Table, rows: list[dict[str, Any]]) -> None:
    dialect = session.get_bind().dialect
    dumps = getattr(dialect, "_json_serializer", None) or json.dumps
    names = list(rows[0])
    columns = [table.c[name] for name in names]
    # JSON columns take serialized text; Python None is JSON null unless none_as_null
    convert: list[tuple[int, bool]] = [
        (i, bool(c.type.none_as_null)) for i, c in enumerate(columns)
        if isinstance(c.type, JSON)]
    quote = dialect.identifier_preparer
    statement = (f"COPY {quote.format_table(table)} "
                 f"({', '.join(quote.quote(name) for name in names)}) FROM STDIN")
    raw = cast(psycopg.Connection[Any], session.connection().connection.driver_connection)
    try:
        with raw.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                values = [row[name] for name in names]
                for i, none_as_null in convert:
                    value = values[i]
                    if value is not None or not none_as_null:
                        values[i] = dumps(value)
                copy.write_row(values)
    except psycopg.Error as exc:  # as SQLAlchemy would raise it (IntegrityError, ...)
        raise DBAPIError.instance(statement, None, exc, psycopg.Error) from exc


def _chunks(items: list[Any], size: int = 500) -> Iterable[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


@dataclass
class _Stored:
    version: int


@dataclass
class BatchRepository:
    """The service's repository for one batch inside one transaction."""

    session: Session
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    accounts: dict[str, Account | None] = field(default_factory=dict)
    _stored: dict[str, _Stored] = field(default_factory=dict)
    _dirty: dict[str, Account] = field(default_factory=dict)
    _processed: set[tuple[str, str]] = field(default_factory=set)
    _new_processed: dict[tuple[str, str], str] = field(default_factory=dict)
    _parked_db: dict[str, list[tuple[int, CloudEvent]]] = field(default_factory=dict)
    _parked_new: dict[str, list[tuple[CloudEvent, Mapping[str, Any] | None]]] = field(
        default_factory=dict)
    _taken_ids: list[int] = field(default_factory=list)
    _outcomes: list[Outcome] = field(default_factory=list)
    _events: list[tuple[CloudEvent, str]] = field(default_factory=list)

    # --- reads, once per batch -------------------------------------------------------------

    def prefetch(self, events: Iterable[CloudEvent]) -> None:
        """Load what the batch's events will look at (see the module docstring)."""
        events = list(events)
        keys = {e.key for e in events}
        ids = sorted({e.account_id for e in events})
        pg = self.session.get_bind().dialect.name == "postgresql"
        lock = pg
        for part in _chunks(sorted(keys)):
            if pg:  # one array parameter: psycopg parses a long IN (...) list slowly
                cond = ProcessedEventRow.event_id == any_(
                    bindparam("ids", sorted({i for _, i in part}), type_=ARRAY(String)))
            else:
                cond = tuple_(ProcessedEventRow.source, ProcessedEventRow.event_id).in_(part)
            found = self.session.execute(
                select(ProcessedEventRow.source, ProcessedEventRow.event_id).where(cond))
            self._processed.update(k for k in ((s, i) for s, i in found) if k in keys)
        for part in _chunks(ids):
            where = (AccountRow.id == any_(bindparam("ids", part, type_=ARRAY(String))) if pg
                     else AccountRow.id.in_(part))
            query = (select(AccountRow.id, AccountRow.state, AccountRow.version)
                     .where(where).order_by(AccountRow.id))
            if lock:
                query = query.with_for_update()
            for account_id, state, version in self.session.execute(query):
                self.accounts[account_id] = Account.model_validate(state)
                self._stored[account_id] = _Stored(version)
        missing = [i for i in ids if i not in self.accounts]
        for account_id in missing:
            self.accounts[account_id] = None
        for part in _chunks(missing):
            rows = self.session.execute(
                select(ParkedEventRow.id, ParkedEventRow.account_id, ParkedEventRow.event)
                .where(ParkedEventRow.account_id.in_(part)).order_by(ParkedEventRow.id))
            for row_id, account_id, event in rows:
                self._parked_db.setdefault(account_id, []).append(
                    (row_id, CloudEvent.model_validate(event)))

    # --- LifecycleRepository ---------------------------------------------------------------

    def get(self, account_id: str) -> Account | None:
        """The account as of this point of the batch (None if it never landed)."""
        if account_id not in self.accounts:  # not prefetched (a parked drain): load it
            row = self.session.get(AccountRow, account_id)
            self.accounts[account_id] = None if row is None else Account.model_validate(
                row.state)
            if row is not None:
                self._stored[account_id] = _Stored(row.version)
        return self.accounts[account_id]

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
        self._outcomes.append(outcome)

    def record_event(self, event: CloudEvent, account_id: str) -> None:
        """Buffer an event for the account's timeline."""
        self._events.append((event, account_id))

    def live_account_ids(self) -> list[str]:
        """Live accounts known to this batch (sweeps do not run through batches)."""
        return sorted(a.id for a in self.accounts.values() if a and a.stage in LIVE_STAGES)

    # --- the write, once per batch ---------------------------------------------------------

    def write(self) -> int:
        """Store everything buffered; returns the number of new signals."""
        s = self.session
        now = self.now
        inserts, updates = [], []
        for account_id, account in self._dirty.items():
            health = account.health
            values = {
                "stage": account.stage.value, "stage_since": account.stage_since,
                "owner": account.owner.value,
                "health_score": health.score if health else None,
                "health_band": health.band if health else None,
                "state": account.model_dump(mode="json"), "updated_at": now,
            }
            stored = self._stored.get(account_id)
            if stored is None:
                inserts.append({"id": account_id, "version": 1, **values})
            else:
                updates.append({"b_id": account_id, "b_version": stored.version,
                                "version": stored.version + 1, **values})
        if inserts:
            _insert_rows(s, _table(AccountRow), inserts)
        if updates:
            table = _table(AccountRow)
            # SET comes from the parameter keys; the version guards like the ORM's version_id
            stmt = update(table).where(table.c.id == bindparam("b_id"),
                                       table.c.version == bindparam("b_version"))
            result = cast(CursorResult[Any], s.execute(stmt, updates))
            if s.get_bind().dialect.supports_sane_multi_rowcount and \
                    result.rowcount != len(updates):
                raise ConcurrentUpdate("an account changed under this batch")

        signals: list[dict[str, Any]] = []
        stage_changes: list[dict[str, Any]] = []
        health_changes: list[dict[str, Any]] = []
        seen: set[str] = set()
        for outcome in self._outcomes:
            for change in outcome.stage_changes:
                stage_changes.append({
                    "account_id": change.account_id,
                    "from_stage": change.from_stage.value if change.from_stage else None,
                    "to_stage": change.to_stage.value, "at": change.at,
                    "reason": change.reason, "event_id": change.event_id})
            for hc in outcome.health_changes:
                health_changes.append({"account_id": hc.account_id, "at": hc.at,
                                       "score": hc.score, "band": hc.band,
                                       "components": dict(hc.components)})
            for signal in outcome.signals:
                if signal.id in seen:
                    continue
                seen.add(signal.id)
                signals.append({"id": signal.id, "account_id": signal.account_id,
                                "kind": signal.kind.value, "at": signal.at,
                                "stage": signal.stage.value,
                                "evidence": signal.evidence.model_dump(mode="json")})
        if signals:
            existing: set[str] = set()
            for part in _chunks([sig["id"] for sig in signals]):
                existing.update(s.scalars(select(SignalRow.id).where(SignalRow.id.in_(part))))
            signals = [sig for sig in signals if sig["id"] not in existing]
        if signals:
            seq = int(s.scalar(select(func.max(SignalRow.seq))) or 0) + 1
            for n, sig in enumerate(signals):
                sig["seq"] = seq + n
            _insert_rows(s, _table(SignalRow), signals)
            _insert_rows(s, _table(OutboxRow), [
                {"signal_id": sig["id"], "account_id": sig["account_id"], "kind": sig["kind"],
                 "status": "pending", "attempts": 0, "created_at": now} for sig in signals])
        if stage_changes:
            _insert_rows(s, _table(StageChangeRow), stage_changes)
        if health_changes:
            _insert_rows(s, _table(HealthChangeRow), health_changes)
        if self._events:
            _insert_rows(s, _table(AppliedEventRow), [
                {"account_id": account_id, "event_id": e.id, "source": e.source,
                 "type": e.type, "time": e.time, "data": e.data.model_dump(mode="json")}
                for e, account_id in self._events])
        if self._new_processed:
            _insert_rows(s, _table(ProcessedEventRow), [
                {"source": source, "event_id": event_id, "account_id": account_id,
                 "processed_at": now}
                for (source, event_id), account_id in self._new_processed.items()])
        parked = [(e, origin) for items in self._parked_new.values() for e, origin in items]
        if parked:
            _insert_rows(s, _table(ParkedEventRow), [
                {"account_id": e.account_id, "event_time": e.time,
                 "event": e.model_dump(mode="json"),
                 "origin": dict(origin) if origin else None, "parked_at": now}
                for e, origin in parked])
        for part in _chunks(self._taken_ids):
            s.execute(delete(ParkedEventRow).where(ParkedEventRow.id.in_(part)))
        return len(signals)
