"""Engines and schema migration; nothing here connects until called.

Alembic is imported by the migration functions only: a read-side command needs an engine, not it.
"""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from persistence.database_url import DbTimeouts

if TYPE_CHECKING:
    from alembic.config import Config


def make_engine(url: str, timeouts: DbTimeouts | None = None, *, read_only: bool = False,
                **kwargs: Any) -> Engine:
    """An engine tuned for this app: SQLite in WAL mode with a busy timeout, pooled PostgreSQL
    with connect, lock and statement timeouts (`timeouts`, the defaults if not given).

    `read_only` SQLite engines begin their transactions deferred: in WAL mode a reader then
    neither waits for the write lock nor holds it (a writer begins IMMEDIATE, see below).
    """
    if url.startswith("sqlite"):
        # No pool unless asked: a connection per session. The executor asks for one: its
        # steps open a dozen short sessions each, and a new connection costs about 0.5 ms.
        kwargs.setdefault("poolclass", NullPool)
        engine = create_engine(url, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy, not pysqlite, decide when transactions begin (see "begin" below).
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            # Writers take the write lock up front: a deferred read-then-write upgrade fails
            # under load. Readers need no lock in WAL mode.
            conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine
    limits = timeouts or DbTimeouts()
    connect_args = dict(kwargs.pop("connect_args", {}))
    # options given in the URL (or by the caller) come first; ours, later, win on a clash
    given = [str(o) for o in (make_url(url).query.get("options"), connect_args.get("options"))
             if o]
    connect_args["options"] = " ".join([*given, limits.options()])
    connect_args.setdefault("connect_timeout", limits.connect_s)
    return create_engine(url, pool_pre_ping=True, connect_args=connect_args, **kwargs)


def alembic_config(url: str | None = None) -> Config:
    """Alembic configuration pointing at the packaged migrations."""
    from alembic.config import Config

    cfg = Config()
    location = resources.files("persistence").joinpath("migrations")
    cfg.set_main_option("script_location", str(location))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to `revision` with Alembic (the only way the schema is created)."""
    from alembic import command

    cfg = alembic_config()
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            # an index build on a big table may take longer than any statement should
            conn.execute(text("SET LOCAL statement_timeout = 0"))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
