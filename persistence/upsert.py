"""Insert a row unless its unique key exists, in one statement on PostgreSQL and SQLite."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import inspect
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from persistence.tables import Base


def insert_if_absent(session: Session, row_type: type[Base], values: Mapping[str, Any],
                     key: Sequence[str]) -> bool:
    """`INSERT ... ON CONFLICT (key) DO NOTHING` in `session`; True if the row is new.

    Writers racing on the same key never raise: the first one's row stays as it is.
    """
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        stmt: Any = postgresql.insert(row_type).values(**values)
    elif dialect == "sqlite":
        stmt = sqlite.insert(row_type).values(**values)
    else:
        raise NotImplementedError(f"no insert-if-absent for {dialect}")
    # Ask RETURNING, not rowcount: the ORM adds RETURNING, after which psycopg reports -1.
    stmt = stmt.on_conflict_do_nothing(index_elements=list(key))
    return session.execute(stmt.returning(*inspect(row_type).primary_key)).first() is not None
