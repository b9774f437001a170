"""PostgreSQL sessions get connect, lock and statement timeouts from the settings; a lock or
statement timeout is an infrastructure failure the consumer retries, never a dead letter
(issue 12). Real PostgreSQL; SQLite keeps its busy timeout."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from consumers.failures import classify, is_infrastructure
from laer.bootstrap import Container
from laer.local.postgres import reset_postgres
from laer.settings import SettingsError, load_policy, load_settings
from persistence.database_url import DbTimeouts
from persistence.db import make_engine, upgrade
from tests.consumers.offline import (
    Feed,
    Letters,
    applied_ids,
    ingestor,
    start,
    stored_offsets,
    ticket,
)

FAST = DbTimeouts(connect_s=2, lock_s=0.5, statement_s=5)


@pytest.fixture
def pg_url(postgres_url: str) -> str:
    """The test PostgreSQL database, emptied."""
    reset_postgres(postgres_url)
    return postgres_url


@pytest.fixture
def fast(pg_url: str) -> Iterator[Engine]:
    """A migrated PostgreSQL engine with a half-second lock timeout."""
    engine = make_engine(pg_url, FAST)
    upgrade(engine)
    yield engine
    engine.dispose()


def test_sessions_carry_the_configured_timeouts(pg_url: str) -> None:
    engine = make_engine(pg_url + "?options=-c%20work_mem%3D5MB",
                         DbTimeouts(connect_s=3, lock_s=1.5, statement_s=7))
    with engine.connect() as conn:
        assert conn.execute(text("SHOW lock_timeout")).scalar() == "1500ms"
        assert conn.execute(text("SHOW statement_timeout")).scalar() == "7s"
        assert conn.execute(text("SHOW work_mem")).scalar() == "5MB"  # the URL's kept
        params = conn.connection.dbapi_connection.info.get_parameters()  # type: ignore[union-attr]
        assert params["connect_timeout"] == "3"
    engine.dispose()
    with make_engine(pg_url).connect() as conn:  # defaults
        assert conn.execute(text("SHOW lock_timeout")).scalar() == "30s"
        assert conn.execute(text("SHOW statement_timeout")).scalar() == "2min"


def test_a_row_lock_held_elsewhere_fails_with_lock_timeout(fast: Engine) -> None:
    with fast.begin() as setup:
        setup.execute(text("CREATE TABLE probe (id int PRIMARY KEY)"))
        setup.execute(text("INSERT INTO probe VALUES (1)"))
    holder = make_engine(fast.url.render_as_string(hide_password=False))
    with holder.connect() as held:
        held.execute(text("SELECT id FROM probe WHERE id = 1 FOR UPDATE"))
        started = time.monotonic()
        with fast.connect() as waiter, pytest.raises(OperationalError) as caught:
            waiter.execute(text("SELECT id FROM probe WHERE id = 1 FOR UPDATE"))
        waited = time.monotonic() - started
        held.rollback()
    holder.dispose()
    assert getattr(caught.value.orig, "sqlstate", None) == "55P03"  # lock_not_available
    assert 0.4 <= waited < 10, waited
    assert is_infrastructure(caught.value) and classify(caught.value) == "database"


def test_a_long_statement_fails_with_statement_timeout(pg_url: str) -> None:
    engine = make_engine(pg_url, DbTimeouts(statement_s=0.5))
    started = time.monotonic()
    with engine.connect() as conn, pytest.raises(OperationalError) as caught:
        conn.execute(text("SELECT pg_sleep(30)"))
    engine.dispose()
    assert getattr(caught.value.orig, "sqlstate", None) == "57014"  # query_canceled
    assert 0.4 <= time.monotonic() - started < 10
    assert is_infrastructure(caught.value)


def test_a_server_that_never_answers_fails_the_connect_in_time(tmp_path: Path) -> None:
    with socket.socket() as silent:  # the kernel accepts; nobody ever answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        engine = make_engine(f"postgresql+psycopg://laer:laer@127.0.0.1:{port}/x",
                             DbTimeouts(connect_s=1))
        started = time.monotonic()
        with pytest.raises(OperationalError) as caught:
            engine.connect()
        assert time.monotonic() - started < 10
    assert is_infrastructure(caught.value)


def test_a_locked_account_holds_the_batch_back_and_dead_letters_nothing(fast: Engine) -> None:
    feed, letters = Feed(), Letters()
    ing = ingestor(fast, letters)
    ing.process([feed.event(start("a"))])
    later = feed.event(ticket("a", 1))
    holder = make_engine(fast.url.render_as_string(hide_password=False))
    with holder.connect() as held:
        held.execute(text("SELECT id FROM accounts WHERE id = 'a' FOR UPDATE"))
        started = time.monotonic()
        with pytest.raises(Exception) as caught:
            ing.process([later])
        # one lock wait, back to the loop: not twenty in-place waits past max_poll_interval
        assert time.monotonic() - started < 8
        held.rollback()
    holder.dispose()
    assert is_infrastructure(caught.value)
    assert not letters.sent and len(applied_ids(fast)) == 1
    ing.process([later])  # the batch again, once the lock is gone
    assert len(applied_ids(fast)) == 2 and not letters.sent
    assert stored_offsets(fast) == feed.offsets


def test_sqlite_keeps_its_busy_timeout(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}", FAST)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000


@pytest.mark.parametrize(("variable", "value", "why"), [
    ("LAER_DB_CONNECT_TIMEOUT_S", "0", "greater than or equal to 1"),
    ("LAER_DB_LOCK_TIMEOUT_S", "0", "greater than 0"),
    ("LAER_DB_STATEMENT_TIMEOUT_S", "soon", "valid number"),
    ("LAER_SWEEP_CHUNK_SIZE", "0", "greater than or equal to 1"),
])
def test_a_bad_timeout_stops_start_up_naming_it(monkeypatch: pytest.MonkeyPatch,
                                                variable: str, value: str, why: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    line = next(ln for ln in str(caught.value).splitlines() if variable in ln)
    assert why in line and repr(value) in line


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_the_settings_reach_the_engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                       dialect: str, request: pytest.FixtureRequest) -> None:
    url = (f"sqlite:///{tmp_path / 'laer.db'}" if dialect == "sqlite"
           else request.getfixturevalue("postgres_url"))
    monkeypatch.setenv("LAER_DATABASE_URL", url)
    monkeypatch.setenv("LAER_DB_LOCK_TIMEOUT_S", "2.5")
    monkeypatch.setenv("LAER_DB_STATEMENT_TIMEOUT_S", "90")
    c = Container(load_settings(), load_policy())
    assert c.settings.db_timeouts() == DbTimeouts(10, 2.5, 90.0)
    with c.engine.connect() as conn:
        if dialect == "postgresql":
            assert conn.execute(text("SHOW lock_timeout")).scalar() == "2500ms"
            assert conn.execute(text("SHOW statement_timeout")).scalar() == "90s"
        else:
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    c.engine.dispose()
