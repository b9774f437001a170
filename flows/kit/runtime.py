"""What a flow run connects to: its settings and database, built on first use, never at import.

Prefect starts playbook flow runs in worker processes of their own; each builds this runtime
once from the environment (`FlowSettings`). Tests that change the environment reset it.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from prefect.runtime import flow_run
from sqlalchemy import Connection, Engine, event
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import QueuePool

from flows.kit.settings import FlowSettings, UnsafeSettings, playbook_settings
from persistence.db import make_engine
from persistence.uow import session_factory


@dataclass
class FlowRuntime:
    """The settings of this process's flow runs and the database they share (lazily)."""

    settings: FlowSettings

    @cached_property
    def engine(self) -> Engine:
        url = self.settings.database_url
        if url.startswith("sqlite"):  # pooled: a step opens a dozen short sessions
            return serialize_writes(make_engine(url, self.settings.db_timeouts(),
                                                poolclass=QueuePool, pool_size=8,
                                                max_overflow=8))
        return make_engine(url, self.settings.db_timeouts())

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        return session_factory(self.engine)

    @cached_property
    def read_engine(self) -> Engine:
        url = self.settings.database_url
        if url.startswith("sqlite"):  # deferred transactions: no wait for the write lock
            return make_engine(url, read_only=True, poolclass=QueuePool, pool_size=8,
                               max_overflow=8)
        return self.engine

    @cached_property
    def reads(self) -> sessionmaker[Session]:
        """Sessions for what a step only reads (its signal, the account, past messages)."""
        return session_factory(self.read_engine)

    def close(self) -> None:
        """Release the engines' connections, if they were ever built."""
        for name in ("read_engine", "engine"):
            if name in self.__dict__:
                self.__dict__[name].dispose()


def serialize_writes(engine: Engine, wait_s: float = 30.0) -> Engine:
    """Make this process's SQLite write transactions queue on a lock of its own.

    Threads of one process waiting for SQLite's write lock sleep in its busy handler, which
    backs off to 25-100 ms a try; waiting on a Python lock they start the moment it is free.
    Other processes still meet at SQLite's lock. A transaction waiting longer than `wait_s`
    goes on without this lock (SQLite's busy timeout still guards the file).
    """
    lock = threading.Lock()
    holders: set[int] = set()  # DBAPI connections whose transaction holds the lock
    dialect = engine.dialect

    def take(conn: Connection) -> None:
        dbapi = conn.connection.dbapi_connection
        if id(dbapi) not in holders and lock.acquire(timeout=wait_s):
            holders.add(id(dbapi))

    def give(dbapi: Any) -> None:
        key = id(getattr(dbapi, "dbapi_connection", dbapi))  # the pool's proxy, or the raw one
        if key in holders:
            holders.discard(key)
            lock.release()

    def ending(original: Callable[[Any], None]) -> Callable[[Any], None]:
        def end(dbapi: Any) -> None:
            try:
                original(dbapi)
            finally:
                give(dbapi)
        return end

    event.listen(engine, "begin", take, insert=True)  # before BEGIN IMMEDIATE (db.py)
    dialect.do_commit = ending(dialect.do_commit)  # type: ignore[method-assign,assignment]
    dialect.do_rollback = ending(dialect.do_rollback)  # type: ignore[method-assign,assignment]
    # a connection thrown away (its transaction ends with it) or returned without a commit
    event.listen(engine, "invalidate", lambda dbapi, _record, _exc: give(dbapi))
    event.listen(engine, "checkin", lambda dbapi, _record: give(dbapi))
    return engine


_runtime: FlowRuntime | None = None
_lock = threading.Lock()  # tasks may run on worker threads of the flow run


def runtime() -> FlowRuntime:
    """The process's flow runtime (settings read and validated on first use)."""
    global _runtime
    with _lock:
        if _runtime is None:
            settings = FlowSettings()
            refuse_unsafe_secret(settings)
            _runtime = FlowRuntime(settings)
        return _runtime


def refuse_unsafe_secret(settings: FlowSettings | None = None) -> None:
    """Stop a runtime that would sign webhooks with the default secret (outside the demo)."""
    if playbook_settings().webhook_url:
        (settings or FlowSettings()).webhook_key()


def refuse_unsafe_start() -> None:
    """For `laer serve`: exit with status 2 and the reason rather than serve unsafe settings."""
    try:
        refuse_unsafe_secret()
    except UnsafeSettings as exc:
        sys.stderr.write(f"{exc}\n")
        raise SystemExit(2) from None


def reset_runtime() -> None:
    """Forget the runtime and close its engine (tests change the environment between cases)."""
    global _runtime
    with _lock:
        if _runtime is not None:
            _runtime.close()
        _runtime = None


def current_flow_run_id() -> str | None:
    """The Prefect run doing the work now: the executing step's task run, or a flow run."""
    from flows.kit.current import current_step

    here = current_step()
    if here is not None:
        return here.task_run_id
    run_id = flow_run.get_id()
    return str(run_id) if run_id else None
