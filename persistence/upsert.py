"""Insert a row unless its unique key exists, in one statement on PostgreSQL and SQLite."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy import Row, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql.dml import OnConflictDoNothing as PgDoNothing
from sqlalchemy.dialects.sqlite.dml import OnConflictDoNothing as SqliteDoNothing
from sqlalchemy.orm import Session, make_transient_to_detached

from persistence.bulk import table_of
from persistence.tables import Base

T = TypeVar("T", bound=Base)
_CLAUSES: dict[tuple[str, str, tuple[str, ...]], type[Any]] = {}
_STATEMENTS: dict[tuple[str, str, tuple[str, ...], bool], Any] = {}


class _PgInsert(postgresql.Insert):
    """The dialect's Insert, cached like a plain one (its ON CONFLICT clause is in the key)."""

    inherit_cache = True


class _SqliteInsert(sqlite.Insert):
    """The dialect's Insert, cached like a plain one (its ON CONFLICT clause is in the key)."""

    inherit_cache = True


def _do_nothing_on(dialect: str, table: str, key: tuple[str, ...]) -> Any:
    """`ON CONFLICT (key) DO NOTHING` as a clause SQLAlchemy can cache statements with.

    The dialects' own clause has no cache key, so every insert was compiled anew (a sixth
    of a playbook step's CPU). A class per dialect, table and key is always this one
    clause, so the class alone (which is in the cache key) tells the SQL apart.
    """
    cls = _CLAUSES.get((dialect, table, key))
    if cls is None:
        base = PgDoNothing if dialect == "postgresql" else SqliteDoNothing
        cls = type(f"DoNothingOn_{table}", (base,), {"_cache_key_traversal": []})
        _CLAUSES[(dialect, table, key)] = cls
    return cls(index_elements=list(key))


def _statement(dialect: str, table: Table, key: tuple[str, ...], whole_row: bool) -> Any:
    """The insert-if-absent statement, built once: its columns come from the parameters.

    A Core statement on the table, not the ORM class: the ORM's bulk-insert path and
    building the statement anew cost more than running it.
    """
    found = _STATEMENTS.get((dialect, table.name, key, whole_row))
    if found is not None:
        return found
    if dialect == "postgresql":
        stmt: Any = _PgInsert(table)
    elif dialect == "sqlite":
        stmt = _SqliteInsert(table)
    else:
        raise NotImplementedError(f"no insert-if-absent for {dialect}")
    # what on_conflict_do_nothing() sets, with the cacheable clause (stmt is ours alone)
    stmt._post_values_clause = _do_nothing_on(dialect, table.name, key)
    # Ask RETURNING, not rowcount: psycopg reports -1 once RETURNING is in the statement.
    stmt = stmt.returning(*(table.c if whole_row else table.primary_key.columns))
    _STATEMENTS[(dialect, table.name, key, whole_row)] = stmt
    return stmt


def _execute(session: Session, row_type: type[Base], values: Mapping[str, Any],
             key: Sequence[str], whole_row: bool) -> Row[Any] | None:
    table = table_of(row_type)
    stmt = _statement(session.get_bind().dialect.name, table, tuple(key), whole_row)
    return session.execute(stmt, dict(values)).first()


def insert_if_absent(session: Session, row_type: type[Base], values: Mapping[str, Any],
                     key: Sequence[str]) -> bool:
    """`INSERT ... ON CONFLICT (key) DO NOTHING` in `session`; True if the row is new.

    Writers racing on the same key never raise: the first one's row stays as it is.
    `values` are keyed by column name (the tables' attributes are named as their columns).
    """
    return _execute(session, row_type, values, key, whole_row=False) is not None


def insert_new_row(session: Session, row_type: type[T], values: Mapping[str, Any],
                            key: Sequence[str]) -> T | None:
    """`insert_if_absent`, giving the new row as a loaded ORM object of `session` (None if
    the key existed): RETURNING every column saves reading the row back."""
    got = _execute(session, row_type, values, key, whole_row=True)
    if got is None:
        return None
    row = row_type(**got._mapping)
    make_transient_to_detached(row)  # as if just loaded: later changes flush as an UPDATE
    session.add(row)
    return row
