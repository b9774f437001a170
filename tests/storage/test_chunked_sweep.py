"""The daily sweep runs in bounded chunks, one transaction each, and on PostgreSQL skips an
account another session holds (`FOR UPDATE SKIP LOCKED`) instead of waiting for it, trying it
again before it ends (issue 12). SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select, text

from laer.local.postgres import reset_postgres
from laer_domain.events import make_event, parse_event
from laer_domain.policy import Policy
from laer_domain.service import LifecycleService
from persistence.db import make_engine, upgrade
from persistence.sweep import SweepReport, sweep_in_chunks
from persistence.tables import OutboxRow, SignalRow
from persistence.uow import UnitOfWork, session_factory
from tests.domain.domain_sim import T0, day, started_data

ACCOUNTS = [f"acc-{n:02d}" for n in range(25)]
HELD = "acc-07"
KINDS = ("RenewalWindowOpened", "RenewalAtRisk")
PER_ACCOUNT = 2  # renewal window opened + renewal at risk, 80 days before a 100-day term ends


def seeded(url: str) -> Engine:
    """A migrated database at `url` holding 25 live accounts and one churned one."""
    engine = make_engine(url)
    upgrade(engine)
    with UnitOfWork(session_factory(engine)) as uow:
        service = LifecycleService(uow.accounts, Policy())
        for account in [*ACCOUNTS, "gone"]:
            service.handle(parse_event(make_event(
                "laer.billing.subscription_started", account, T0, started_data(days=100))))
        service.handle(parse_event(make_event(
            "laer.billing.subscription_canceled", "gone", day(1),
            {"effective_at": day(1).isoformat(), "reason": "x"})))
        uow.commit()
    return engine


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """A seeded database of each kind."""
    engine = seeded(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def pg_engine(postgres_url: str) -> Iterator[Engine]:
    """A seeded PostgreSQL database (row locks and SKIP LOCKED; SQLite locks the database)."""
    reset_postgres(postgres_url)
    engine = seeded(postgres_url)
    yield engine
    engine.dispose()


def signals(engine: Engine) -> Counter[str]:
    """The sweep's signals (the renewal ones) stored per account."""
    with session_factory(engine)() as s:
        return Counter(dict(s.execute(
            select(SignalRow.account_id, func.count()).where(SignalRow.kind.in_(KINDS))
            .group_by(SignalRow.account_id)).tuples().all()))


def outbox(engine: Engine) -> int:
    """The sweep's signals queued for dispatch."""
    with session_factory(engine)() as s:
        return int(s.scalar(select(func.count()).select_from(OutboxRow).join(
            SignalRow, SignalRow.id == OutboxRow.signal_id).where(SignalRow.kind.in_(KINDS)))
            or 0)


def test_a_sweep_over_several_chunks_applies_every_account_once(engine: Engine) -> None:
    factory = session_factory(engine)
    report = sweep_in_chunks(factory, Policy(), day(20), chunk_size=10)
    assert (report.swept, report.chunks, report.skipped) == (25, 3, [])
    assert report.signals == {"RenewalWindowOpened": 25, "RenewalAtRisk": 25}
    assert signals(engine) == dict.fromkeys(ACCOUNTS, PER_ACCOUNT)  # not "gone": churned
    assert outbox(engine) == 25 * PER_ACCOUNT
    again = sweep_in_chunks(factory, Policy(), day(20), chunk_size=7)  # idempotent
    assert again.swept == 25 and not again.signals and again.chunks == 4
    assert signals(engine) == dict.fromkeys(ACCOUNTS, PER_ACCOUNT)


@pytest.fixture
def held(pg_engine: Engine) -> Iterator[threading.Event]:
    """HELD's row locked by another session until the event is set."""
    engine = pg_engine
    release, locked = threading.Event(), threading.Event()

    def hold() -> None:
        with engine.connect() as conn:
            conn.execute(text("SELECT id FROM accounts WHERE id = :id FOR UPDATE"), {"id": HELD})
            locked.set()
            release.wait(60)
            conn.rollback()

    holder = threading.Thread(target=hold)
    holder.start()
    assert locked.wait(30)
    yield release
    release.set()
    holder.join(30)


def test_a_locked_account_does_not_block_the_sweep_and_the_next_sweep_takes_it(
        pg_engine: Engine, held: threading.Event) -> None:
    engine = pg_engine
    factory = session_factory(engine)
    started = time.monotonic()
    report = sweep_in_chunks(factory, Policy(), day(20), chunk_size=10,
                             retry_pauses=(0.05, 0.05))
    # the default lock timeout is 30 s: a sweep that waited on the lock would take longer
    assert time.monotonic() - started < 15
    assert report.skipped == [HELD] and report.swept == 24
    assert signals(engine) == {a: PER_ACCOUNT for a in ACCOUNTS if a != HELD}
    held.set()  # released: the next sweep applies it, and nothing twice
    report = sweep_in_chunks(factory, Policy(), day(20), chunk_size=10)
    assert report.skipped == [] and report.signals == {"RenewalWindowOpened": 1,
                                                       "RenewalAtRisk": 1}
    assert signals(engine) == dict.fromkeys(ACCOUNTS, PER_ACCOUNT)
    assert outbox(engine) == 25 * PER_ACCOUNT


def test_an_account_released_during_the_sweep_is_swept_before_it_ends(
        pg_engine: Engine, held: threading.Event) -> None:
    engine = pg_engine
    factory = session_factory(engine)
    done: list[SweepReport] = []
    sweeper = threading.Thread(target=lambda: done.append(sweep_in_chunks(
        factory, Policy(), day(20), chunk_size=10, retry_pauses=(0.1,) * 300)))
    sweeper.start()
    deadline = time.monotonic() + 30
    while sum(signals(engine).values()) < 24 * PER_ACCOUNT:  # every other account committed
        assert time.monotonic() < deadline and sweeper.is_alive(), signals(engine)
        time.sleep(0.02)
    assert HELD not in signals(engine)
    held.set()
    sweeper.join(30)
    assert not sweeper.is_alive() and done[0].skipped == [] and done[0].swept == 25
    assert signals(engine) == dict.fromkeys(ACCOUNTS, PER_ACCOUNT)
    assert outbox(engine) == 25 * PER_ACCOUNT


def test_the_sweep_command_sweeps_in_chunks_of_the_setting(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'laer.db'}"
    seeded(url).dispose()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAER_")}
    env.update(LAER_DATABASE_URL=url, LAER_STATE_DIR=str(tmp_path / "state"),
               LAER_SWEEP_CHUNK_SIZE="4")
    done = subprocess.run([sys.executable, "-m", "laer.cli", "sweep", "--at",
                           day(20).isoformat(), "--json"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert (out["accounts"], out["chunks"], out["skipped"]) == (25, 7, [])
    assert out["signals"] == {"RenewalWindowOpened": 25, "RenewalAtRisk": 25}
    engine = make_engine(url)
    assert signals(engine) == dict.fromkeys(ACCOUNTS, PER_ACCOUNT)
    engine.dispose()
