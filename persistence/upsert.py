"""Insert a row unless its unique key exists, in one statement on PostgreSQL and SQLite."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import inspect
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql.dml import OnConflictDoNothing as PgDoNothing
from sqlalchemy.dialects.sqlite.dml import OnConflictDoNothing as SqliteDoNothing
from sqlalchemy.orm import Session

from persistence.tables import Base

_CLAUSES: dict[tuple[str, str, tuple[str, ...]], type[Any]] = {}


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


def insert_if_absent(session: Session, row_type: type[Base], values: Mapping[str, Any],
                     key: Sequence[str]) -> bool:
    """`INSERT ... ON CONFLICT (key) DO NOTHING` in `session`; True if the row is new.

    Writers racing on the same key never raise: the first one's row stays as it is.
    """
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        stmt: Any = _PgInsert(row_type).values(**values)
    elif dialect == "sqlite":
        stmt = _SqliteInsert(row_type).values(**values)
    else:
        raise NotImplementedError(f"no insert-if-absent for {dialect}")
    # what on_conflict_do_nothing() sets, with the cacheable clause (stmt is ours alone)
    stmt._post_values_clause = _do_nothing_on(dialect, row_type.__tablename__, tuple(key))
    # Ask RETURNING, not rowcount: the ORM adds RETURNING, after which psycopg reports -1.
    return session.execute(stmt.returning(*inspect(row_type).primary_key)).first() is not None
