"""The benchmarks' databases: a fresh one per measurement, and how far a group has consumed."""

from __future__ import annotations

import uuid
from pathlib import Path

from sqlalchemy import Engine, func, select

from laer.local.postgres import reset_postgres
from persistence.tables import ConsumerOffsetRow

PG_DEFAULT = "postgresql+psycopg://laer:laer@127.0.0.1:5432/laer_bench"


def reset(db_url: str, home: Path) -> str:
    """The URL of an empty database: PostgreSQL emptied, or a new SQLite file in `home`."""
    if db_url.startswith("postgresql"):
        reset_postgres(db_url)
        return db_url
    path = home / f"bench-{uuid.uuid4().hex[:6]}.db"
    return f"sqlite:///{path}"


def consumed(engine: Engine, group: str) -> int:
    """Records the group has consumed: the sum of its stored next offsets."""
    with engine.connect() as conn:
        return int(conn.scalar(select(func.coalesce(func.sum(ConsumerOffsetRow.next_offset), 0))
                               .where(ConsumerOffsetRow.group_id == group)) or 0)
