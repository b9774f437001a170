"""What a consumer batch reads before it applies anything: a few SELECTs per batch.

Each read takes the whole batch's keys, in slices (`bulk.chunks`), shaped for each database's
planner and driver; `BatchRepository.prefetch` says what is read and why.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from sqlalchemy import ARRAY, ColumnElement, String, any_, bindparam, func, select
from sqlalchemy.orm import Session

from laer_domain.events import CloudEvent
from laer_domain.model import Account
from persistence.account_cache import RowStamp
from persistence.bulk import chunks
from persistence.rows import account_from_state, applied_event_from_row, parked_event_from_row
from persistence.tables import AccountRow, AppliedEventRow, ParkedEventRow, ProcessedEventRow

Key = tuple[str, str]


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def processed_keys(session: Session, keys: set[Key]) -> set[Key]:
    """Which of these (source, id) keys the dedup ledger holds."""
    found_keys: set[Key] = set()
    if is_postgres(session):
        for part in chunks(sorted(keys)):
            # (source, id) pairs as two array parameters joined on the primary key: an
            # index probe per key (psycopg parses a long IN (...) list slowly, and a
            # condition on event_id alone scans the whole, ever growing, ledger)
            wanted = func.unnest(
                bindparam("sources", [k[0] for k in part], type_=ARRAY(String)),
                bindparam("ids", [k[1] for k in part], type_=ARRAY(String)),
            ).table_valued("source", "event_id").render_derived(name="wanted")
            found = session.execute(
                select(ProcessedEventRow.source, ProcessedEventRow.event_id).join(
                    wanted, (ProcessedEventRow.source == wanted.c.source)
                    & (ProcessedEventRow.event_id == wanted.c.event_id)))
            found_keys.update(k for k in ((s, i) for s, i in found) if k in keys)
        return found_keys
    # per source: SQLite scans the whole index for `(source, event_id) IN (...)`
    by_source: dict[str, list[str]] = {}
    for source, event_id in sorted(keys):
        by_source.setdefault(source, []).append(event_id)
    for source, event_ids in by_source.items():
        for ids in chunks(event_ids):
            found = session.execute(
                select(ProcessedEventRow.source, ProcessedEventRow.event_id).where(
                    ProcessedEventRow.source == source,
                    ProcessedEventRow.event_id.in_(ids)))
            found_keys.update(k for k in ((s, i) for s, i in found) if k in keys)
    return found_keys


def _id_in(ids: list[str], pg: bool) -> ColumnElement[bool]:
    # one array parameter on PostgreSQL: psycopg parses a long IN (...) list slowly
    return (AccountRow.id == any_(bindparam("ids", ids, type_=ARRAY(String))) if pg
            else AccountRow.id.in_(ids))


def account_stamps(session: Session, ids: list[str]) -> Iterator[tuple[str, RowStamp]]:
    """The stamps of the accounts that have rows, in id order; on PostgreSQL the rows are
    locked `FOR UPDATE` in that order, so two consumers serialise on an account."""
    pg = is_postgres(session)
    for part in chunks(ids):
        query = (select(AccountRow.id, AccountRow.version, AccountRow.updated_at)
                 .where(_id_in(part, pg)).order_by(AccountRow.id))
        if pg:
            query = query.with_for_update()
        for account_id, version, updated_at in session.execute(query):
            yield account_id, RowStamp(version, updated_at)


def account_states(session: Session, ids: list[str]) -> Iterator[tuple[str, Account]]:
    """The accounts these rows hold, parsed."""
    pg = is_postgres(session)
    for part in chunks(ids):
        for account_id, state in session.execute(
                select(AccountRow.id, AccountRow.state).where(_id_in(part, pg))):
            yield account_id, account_from_state(state)


def parked_events(session: Session, account_ids: Iterable[str]
                  ) -> Iterator[tuple[int, str, CloudEvent]]:
    """(row id, account id, event) of the events parked for these accounts, oldest first."""
    for part in chunks(list(account_ids)):
        rows = session.execute(
            select(ParkedEventRow.id, ParkedEventRow.account_id, ParkedEventRow.event)
            .where(ParkedEventRow.account_id.in_(part)).order_by(ParkedEventRow.id))
        for row_id, account_id, event in rows:
            yield row_id, account_id, parked_event_from_row(event)


def timeline(session: Session, account_id: str) -> list[CloudEvent]:
    """The account's stored timeline as events, in the order it was recorded."""
    t = AppliedEventRow
    return [applied_event_from_row(account_id, *row) for row in session.execute(
        select(t.event_id, t.source, t.type, t.time, t.data)
        .where(t.account_id == account_id).order_by(t.id))]
