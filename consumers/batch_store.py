"""A batch-scoped lifecycle repository: read once up front, write once at the end.

`SqlLifecycleRepository` does a few ORM round trips per event (dedup lookup, account load
and rewrite, signal sequence, flushes), which caps ingestion at a couple of hundred events a
second. Inside one consumer transaction the same effects can be computed in memory and
written with a handful of set-based statements:

1. `prefetch` loads, for every account and event of the batch, the dedup ledger rows, the
   account rows (locked `FOR UPDATE` in id order on PostgreSQL, so two consumers serialise on
   an account exactly as the row-at-a-time repository does) and the parked events of accounts
   that do not exist yet and land in this batch. An account whose row still has the version
   stamp this process last wrote or read comes out of the `AccountCache` instead of being
   parsed again from its JSON;
2. `LifecycleService` runs unchanged against this object (it implements the service's
   `LifecycleRepository` protocol) and everything it does is buffered. The accounts are the
   batch's own, so its `EventBatch` changes them in place instead of copying them (`reload`
   gives a failed event's account back as its row holds it);
3. `write` stores the result: one insert/update per touched account (its last state,
   serialized once), and bulk inserts (COPY on PostgreSQL, one executemany on SQLite) for
   signals (skipping stored ids, each queued once in the outbox), stage and health changes,
   the event timeline, the dedup ledger and parked events;
4. after the commit, `committed_accounts` hands the written states to the cache.

The rows written are the ones `SqlLifecycleRepository` writes (same tables, columns, order
within an account, signal sequence numbering); the consumer tests compare both paths with
the domain's in-memory reference.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
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
    Text,
    any_,
    bindparam,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from laer_domain.events import CloudEvent, EventType
from laer_domain.model import LIVE_STAGES, Account
from laer_domain.rules import Outcome
from persistence.tables import (
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


class ConcurrentUpdate(Exception):
    """Another consumer changed the same rows first; the batch is retried from scratch."""


def _table(row: type[Base]) -> Table:
    return Base.metadata.tables[row.__tablename__]


class JsonText(str):
    """A value already serialized to JSON text, written as it is into a JSON column."""

    __slots__ = ()


def _insert_rows(session: Session, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert many rows in few round trips.

    On PostgreSQL the rows are streamed with one COPY (values converted as the SQLAlchemy
    column types would bind them); psycopg's executemany sends one statement per row and a
    multi-row VALUES statement costs psycopg and the server a long parse. On SQLite the
    values go through the columns' own bind processors into one DBAPI executemany (SQLite's
    executemany is a C loop in process; SQLAlchemy's per-row parameter handling is not).
    A `JsonText` value of a JSON column is stored as it is.
    """
    if not rows:
        return
    if session.get_bind().dialect.name == "postgresql":
        _copy_rows(session, table, rows)
    else:
        _executemany_rows(session, table, rows)


def _executemany_rows(session: Session, table: Table, rows: list[dict[str, Any]]) -> None:
    dialect = session.get_bind().dialect
    names = list(rows[0])
    processors: list[Callable[[Any], Any] | None] = []
    for name in names:
        column_type = table.c[name].type
        process = column_type.dialect_impl(dialect).bind_processor(dialect)
        processors.append(_json_or_text(process) if isinstance(column_type, JSON) else process)
    quote = dialect.identifier_preparer
    statement = (f"INSERT INTO {quote.format_table(table)} "
                 f"({', '.join(quote.quote(name) for name in names)}) "
                 f"VALUES ({', '.join('?' for _ in names)})")
    pairs = list(zip(names, processors, strict=True))
    params = [tuple(row[name] if process is None else process(row[name])
                    for name, process in pairs) for row in rows]
    session.connection().exec_driver_sql(statement, params)


def _json_or_text(process: Callable[[Any], Any] | None) -> Callable[[Any], Any]:
    def bind(value: Any) -> Any:
        if isinstance(value, JsonText):
            return str(value)
        return value if process is None else process(value)
    return bind


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
                    if isinstance(value, JsonText):
                        values[i] = str(value)
                    elif value is not None or not none_as_null:
                        values[i] = dumps(value)
                copy.write_row(values)
    except psycopg.Error as exc:  # as SQLAlchemy would raise it (IntegrityError, ...)
        raise DBAPIError.instance(statement, None, exc, psycopg.Error) from exc


# new account values per column, as PostgreSQL arrays: (parameter, array type, column)
_ACCOUNT_ARRAYS = (
    ("b_id", "text[]", None), ("b_version", "int[]", None), ("b_state", "text[]", "state"),
    ("version", "int[]", "version"), ("stage", "text[]", "stage"),
    ("stage_since", "timestamptz[]", "stage_since"), ("owner", "text[]", "owner"),
    ("health_score", "int[]", "health_score"), ("health_band", "text[]", "health_band"),
    ("updated_at", "timestamptz[]", "updated_at"),
)


def _update_accounts(session: Session, updates: list[dict[str, Any]]) -> None:
    """Write new account states, each only if its row still has the version read.

    The state is JSON text (`JsonText`), stored as it is. On PostgreSQL one UPDATE joins
    the rows to the new values, sent as one binary array per column (one statement, not one
    per account; text-format arrays would cost an escape per quote of every state); SQLite
    runs the statement per row in process. A row whose version moved on (another writer got
    there first) is not updated, and the batch is retried.
    """
    table = _table(AccountRow)
    dialect = session.get_bind().dialect
    if dialect.name == "postgresql":
        quote = dialect.identifier_preparer
        sets = ", ".join(
            f"{quote.quote(column)} = new.{name}" + ("::json" if column == "state" else "")
            for name, _, column in _ACCOUNT_ARRAYS if column)
        statement = (
            f"UPDATE {quote.format_table(table)} AS a SET {sets} FROM unnest("
            + ", ".join(f"%b::{array}" for _, array, _ in _ACCOUNT_ARRAYS)
            + f") AS new({', '.join(name for name, _, _ in _ACCOUNT_ARRAYS)}) "
            "WHERE a.id = new.b_id AND a.version = new.b_version")
        params = [[str(u[name]) if name == "b_state" else u[name] for u in updates]
                  for name, _, _ in _ACCOUNT_ARRAYS]
        raw = cast(psycopg.Connection[Any], session.connection().connection.driver_connection)
        try:
            with raw.cursor() as cursor:
                cursor.execute(statement, params)
                changed = cursor.rowcount
        except psycopg.Error as exc:  # as SQLAlchemy would raise it (IntegrityError, ...)
            raise DBAPIError.instance(statement, None, exc, psycopg.Error) from exc
    else:
        # SET comes from the parameter keys; the version guards like the ORM's version_id
        stmt = update(table).where(
            table.c.id == bindparam("b_id"), table.c.version == bindparam("b_version")
        ).values(state=bindparam("b_state", type_=Text))
        result = cast(CursorResult[Any], session.execute(stmt, updates))
        changed = result.rowcount if dialect.supports_sane_multi_rowcount else len(updates)
    if changed != len(updates):
        raise ConcurrentUpdate("an account changed under this batch")


def _chunks(items: list[Any], size: int = 500) -> Iterable[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


@dataclass(frozen=True)
class _Stored:
    """An account row's version stamp: every writer bumps `version`, `updated_at` too."""

    version: int
    updated_at: datetime


class AccountCache:
    """Accounts as this process last committed (or read) them, keyed by id and row stamp.

    An entry serves a batch only while the account row still has the stamp it was stored
    with: every writer of `accounts` bumps the version (the ORM's version_id_col,
    `BatchRepository.write`), so a change by another consumer, the sweeper or a flow is seen
    and the state is parsed from the row again. An entry is handed out once: `take` removes
    it, the batch that took it changes it in place, and `put` brings it back only after that
    batch committed (a batch that fails leaves its accounts to be parsed again). At most
    `size` accounts are kept, least recently used first out, so memory stays bounded however
    many accounts there are.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[str, tuple[_Stored, Account]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def take(self, account_id: str, stamp: _Stored) -> Account | None:
        """Remove and return the cached state if it is the one with this stamp."""
        item = self._items.pop(account_id, None)
        if item is None or item[0] != stamp:
            return None
        return item[1]

    def put(self, items: Iterable[tuple[str, _Stored, Account]]) -> None:
        """Remember committed states (call only once their transaction committed)."""
        if self.size <= 0:
            return
        for account_id, stamp, account in items:
            self._items[account_id] = (stamp, account)
            self._items.move_to_end(account_id)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def clear(self) -> None:
        """Forget everything."""
        self._items.clear()

    def entries(self) -> list[tuple[str, _Stored, Account]]:
        """What the cache holds, least recently used first."""
        return [(account_id, stamp, account)
                for account_id, (stamp, account) in self._items.items()]


@dataclass
class BatchRepository:
    """The service's repository for one batch inside one transaction."""

    session: Session
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    cache: AccountCache | None = None
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
        if pg:
            for part in _chunks(sorted(keys)):
                # (source, id) pairs as two array parameters joined on the primary key: an
                # index probe per key (psycopg parses a long IN (...) list slowly, and a
                # condition on event_id alone scans the whole, ever growing, ledger)
                wanted = func.unnest(
                    bindparam("sources", [k[0] for k in part], type_=ARRAY(String)),
                    bindparam("ids", [k[1] for k in part], type_=ARRAY(String)),
                ).table_valued("source", "event_id").render_derived(name="wanted")
                found = self.session.execute(
                    select(ProcessedEventRow.source, ProcessedEventRow.event_id).join(
                        wanted, (ProcessedEventRow.source == wanted.c.source)
                        & (ProcessedEventRow.event_id == wanted.c.event_id)))
                self._processed.update(k for k in ((s, i) for s, i in found) if k in keys)
        else:
            # per source: SQLite scans the whole index for `(source, event_id) IN (...)`
            by_source: dict[str, list[str]] = {}
            for source, event_id in sorted(keys):
                by_source.setdefault(source, []).append(event_id)
            for source, event_ids in by_source.items():
                for part in _chunks(event_ids):
                    found = self.session.execute(
                        select(ProcessedEventRow.source, ProcessedEventRow.event_id).where(
                            ProcessedEventRow.source == source,
                            ProcessedEventRow.event_id.in_(part)))
                    self._processed.update(
                        k for k in ((s, i) for s, i in found) if k in keys)
        stale: list[str] = []
        for part in _chunks(ids):
            where = (AccountRow.id == any_(bindparam("ids", part, type_=ARRAY(String))) if pg
                     else AccountRow.id.in_(part))
            query = (select(AccountRow.id, AccountRow.version, AccountRow.updated_at)
                     .where(where).order_by(AccountRow.id))
            if lock:
                query = query.with_for_update()
            for account_id, version, updated_at in self.session.execute(query):
                stamp = _Stored(version, updated_at)
                self._stored[account_id] = stamp
                cached = self.cache.take(account_id, stamp) if self.cache is not None else None
                if cached is None:
                    stale.append(account_id)
                else:
                    self.accounts[account_id] = cached
        for part in _chunks(stale):  # the rows are locked: they are as stamped above
            where = (AccountRow.id == any_(bindparam("ids", part, type_=ARRAY(String))) if pg
                     else AccountRow.id.in_(part))
            for account_id, state in self.session.execute(
                    select(AccountRow.id, AccountRow.state).where(where)):
                self.accounts[account_id] = Account.model_validate(state)
        missing = [i for i in ids if i not in self.accounts]
        for account_id in missing:
            self.accounts[account_id] = None
        # Stored parked events are taken only when their account lands, and an account that
        # does not exist lands only through a subscription_started of this batch: the parked
        # events of other missing accounts stay where they are, unread.
        landing = {e.account_id for e in events if e.type == EventType.SUBSCRIPTION_STARTED}
        for part in _chunks([i for i in missing if i in landing]):
            rows = self.session.execute(
                select(ParkedEventRow.id, ParkedEventRow.account_id, ParkedEventRow.event)
                .where(ParkedEventRow.account_id.in_(part)).order_by(ParkedEventRow.id))
            for row_id, account_id, event in rows:
                self._parked_db.setdefault(account_id, []).append(
                    (row_id, CloudEvent.model_validate(event)))

    # --- LifecycleRepository ---------------------------------------------------------------

    def get(self, account_id: str) -> Account | None:
        """The account as of this point of the batch (None if it never landed)."""
        if account_id not in self.accounts:  # not prefetched (the consumer prefetches all)
            row = self.session.get(AccountRow, account_id)
            self.accounts[account_id] = None if row is None else Account.model_validate(
                row.state)
            if row is not None:
                self._stored[account_id] = _Stored(row.version, row.updated_at)
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
        account = None if state is None else Account.model_validate(state)
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
                "health_band": health.band if health else None, "updated_at": now,
            }
            state = JsonText(account.model_dump_json())  # once per account and batch
            stored = self._stored.get(account_id)
            if stored is None:
                inserts.append({"id": account_id, "version": 1, "state": state, **values})
            else:
                updates.append({"b_id": account_id, "b_version": stored.version,
                                "b_state": state, "version": stored.version + 1, **values})
        if inserts:
            _insert_rows(s, _table(AccountRow), inserts)
        if updates:
            _update_accounts(s, updates)

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
                 "type": e.type, "time": e.time, "data": JsonText(e.data.model_dump_json())}
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
                 "event": JsonText(e.model_dump_json()),
                 "origin": dict(origin) if origin else None, "parked_at": now}
                for e, origin in parked])
        for part in _chunks(self._taken_ids):
            s.execute(delete(ParkedEventRow).where(ParkedEventRow.id.in_(part)))
        return len(signals)

    def committed_accounts(self) -> list[tuple[str, _Stored, Account]]:
        """Each account this batch read or wrote, with the stamp its row has after `write`.

        Only true once the transaction committed; `Ingestor` then hands these to the cache.
        """
        items = []
        for account_id, account in self.accounts.items():
            if account is None:
                continue
            stored = self._stored.get(account_id)
            if account_id in self._dirty:
                stamp = _Stored(1 if stored is None else stored.version + 1, self.now)
            elif stored is None:  # pragma: no cover - an account is read from its row
                continue
            else:
                stamp = stored
            items.append((account_id, stamp, account))
        return items
