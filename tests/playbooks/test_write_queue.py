"""Threads of one executor queue for SQLite's write lock on a lock of their own, released
however a transaction ends (commit, rollback, an error, a connection thrown away)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.pool import QueuePool

from flows.kit.runtime import serialize_writes
from persistence.db import make_engine


def _engine(tmp_path: Path, wait_s: float) -> object:
    engine = serialize_writes(make_engine(f"sqlite:///{tmp_path / 'q.db'}", poolclass=QueuePool,
                                          pool_size=4), wait_s=wait_s)
    with engine.begin() as conn:
        conn.execute(text("create table t (n integer)"))
    return engine


def _write_from_another_thread(engine: object) -> float:
    took: list[float] = []

    def write() -> None:
        started = time.monotonic()
        with engine.begin() as conn:  # type: ignore[attr-defined]
            conn.execute(text("insert into t values (1)"))
        took.append(time.monotonic() - started)

    t = threading.Thread(target=write)
    t.start()
    t.join(30)
    assert took, "the other thread's write never finished"
    return took[0]


@pytest.mark.parametrize("end", ["commit", "rollback", "error", "invalidate"])
def test_the_lock_is_free_after_a_transaction_ends(end: str, tmp_path: Path) -> None:
    engine = _engine(tmp_path, wait_s=5.0)
    conn = engine.connect()  # type: ignore[attr-defined]
    trans = conn.begin()
    conn.execute(text("insert into t values (0)"))
    if end == "commit":
        trans.commit()
    elif end == "rollback":
        trans.rollback()
    elif end == "error":
        with pytest.raises(Exception, match="no such table"):
            conn.execute(text("insert into missing values (0)"))
        trans.rollback()
    else:
        conn.invalidate()
    conn.close()
    assert _write_from_another_thread(engine) < 2.0  # not the 5 s of a lock left held


def test_a_waiting_writer_starts_when_the_holder_commits(tmp_path: Path) -> None:
    engine = _engine(tmp_path, wait_s=10.0)
    with engine.connect() as conn:  # type: ignore[attr-defined]
        trans = conn.begin()
        conn.execute(text("insert into t values (0)"))
        done = threading.Event()
        waiter = threading.Thread(target=lambda: (_write_from_another_thread(engine),
                                                  done.set()))
        waiter.start()
        assert not done.wait(0.3)  # it waits for this transaction
        trans.commit()
    assert done.wait(5)
    waiter.join()
