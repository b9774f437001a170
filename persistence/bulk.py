"""Set-based writes for a batch: many rows per statement, on PostgreSQL and on SQLite.

The SQL is written by hand because SQLAlchemy's generic paths cost more than the work they
wrap here (per-row parameter handling, psycopg's statement per row in executemany). Rows are
the dicts of `persistence.rows`; a `JsonText` value of a JSON column is stored as it is.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, cast

import psycopg
from sqlalchemy import JSON, CursorResult, Table, Text, bindparam, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from persistence.rows import JsonText, Row
from persistence.tables import AccountRow, Base

_T = TypeVar("_T")


def table_of(row: type[Base]) -> Table:
    """The Core table of an ORM row class."""
    return Base.metadata.tables[row.__tablename__]


def chunks(items: list[_T], size: int = 500) -> Iterable[list[_T]]:
    """`items` in slices of at most `size` (bounds the parameters of one statement)."""
    for i in range(0, len(items), size):
        yield items[i:i + size]


def insert_rows(session: Session, table: Table, rows: list[Row]) -> None:
    """Insert many rows in few round trips.

    On PostgreSQL the rows are streamed with one COPY (values converted as the SQLAlchemy
    column types would bind them); psycopg's executemany sends one statement per row and a
    multi-row VALUES statement costs psycopg and the server a long parse. On SQLite the
    values go through the columns' own bind processors into one DBAPI executemany (SQLite's
    executemany is a C loop in process; SQLAlchemy's per-row parameter handling is not).
    """
    if not rows:
        return
    if session.get_bind().dialect.name == "postgresql":
        _copy_rows(session, table, rows)
    else:
        _executemany_rows(session, table, rows)


def _executemany_rows(session: Session, table: Table, rows: list[Row]) -> None:
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


def _psycopg(session: Session) -> psycopg.Connection[Any]:
    return cast(psycopg.Connection[Any], session.connection().connection.driver_connection)


def _copy_rows(session: Session, table: Table, rows: list[Row]) -> None:
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
    try:
        with _psycopg(session).cursor() as cursor, cursor.copy(statement) as copy:
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


def update_accounts(session: Session, updates: list[Row]) -> int:
    """Write new account states, each only if its row still has the version read.

    An update is the account's row (`rows.account_row`) with `id` and `state` as `b_id` and
    `b_state`, plus `b_version` (the version read) and `version` (the next). The state is
    `JsonText`, stored as it is. On PostgreSQL one UPDATE joins the rows to the new values,
    sent as one binary array per column (one statement, not one per account; text-format
    arrays would cost an escape per quote of every state); SQLite runs the statement per row
    in process. Returns how many rows were updated: fewer than given means another writer
    moved a version on first.
    """
    table = table_of(AccountRow)
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
        try:
            with _psycopg(session).cursor() as cursor:
                cursor.execute(statement, params)
                return cursor.rowcount
        except psycopg.Error as exc:  # as SQLAlchemy would raise it (IntegrityError, ...)
            raise DBAPIError.instance(statement, None, exc, psycopg.Error) from exc
    # SET comes from the parameter keys; the version guards like the ORM's version_id
    stmt = update(table).where(
        table.c.id == bindparam("b_id"), table.c.version == bindparam("b_version")
    ).values(state=bindparam("b_state", type_=Text))
    result = cast(CursorResult[Any], session.execute(stmt, updates))
    return result.rowcount if dialect.supports_sane_multi_rowcount else len(updates)
