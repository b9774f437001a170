"""`laer dispatch` with a backlog of signals stops promptly on SIGTERM (within one batch),
loses none of them, and a restart dispatches the rest, each once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session, sessionmaker

from persistence.db import make_engine, upgrade
from persistence.tables import AccountRow, OutboxRow, PlaybookStepRow, SignalRow
from persistence.uow import session_factory

BACKLOG = 20_000


def _seed(sessions: sessionmaker[Session], n: int) -> None:
    now = datetime.now(UTC)
    details = {"rule": "committed_and_functional", "details": {"from": "land", "to": "adopt"}}
    with sessions() as s:
        s.execute(insert(AccountRow), [dict(
            id=f"acct-{i}", stage="adopt", stage_since=now, owner="customer_success",
            health_score=None, health_band=None, state={}, updated_at=now, version=1)
            for i in range(n)])
        s.execute(insert(SignalRow), [dict(
            id=f"sig-{i}", seq=i, account_id=f"acct-{i}", kind="StageChanged", at=now,
            stage="adopt", evidence=details) for i in range(n)])
        s.execute(insert(OutboxRow), [dict(
            signal_id=f"sig-{i}", account_id=f"acct-{i}", kind="StageChanged", status="pending",
            attempts=0, created_at=now) for i in range(n)])
        s.commit()


def _count(sessions: sessionmaker[Session], status: str) -> int:
    with sessions() as s:
        return int(s.scalar(select(func.count()).where(OutboxRow.status == status)) or 0)


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_sigterm_with_a_backlog_stops_within_a_batch_and_loses_nothing(
        database_url: str, tmp_path: Path) -> None:
    engine = make_engine(database_url)
    upgrade(engine)
    _seed(session_factory(engine), BACKLOG)
    # Counting reads must not queue for SQLite's write lock: the dispatcher holds it batch
    # after batch, and a writer-engine reader then starves until the backlog is gone.
    reads = make_engine(database_url, read_only=True)
    sessions = session_factory(reads)
    env = dict(os.environ, LAER_DATABASE_URL=database_url, LAER_PREFECT__DISPATCH_BATCH="200")
    env.pop("PREFECT_API_URL", None)  # journey events have nowhere to go: dispatch goes on
    log = (tmp_path / "dispatch.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "laer.cli", "dispatch"], env=env,
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while _count(sessions, "done") == 0 and time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "dispatch.log").read_text()
            time.sleep(0.05)
        assert _count(sessions, "done") > 0, "the dispatcher never started"
        os.killpg(proc.pid, signal.SIGTERM)
        signalled = time.monotonic()
        proc.wait(timeout=60)
        stopped_in = time.monotonic() - signalled
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
    assert proc.returncode == 0, (tmp_path / "dispatch.log").read_text()
    assert stopped_in < 10, stopped_in  # one batch of 200 takes well under a second
    done, pending = _count(sessions, "done"), _count(sessions, "pending")
    assert done + pending == BACKLOG and pending > 0  # stopped mid-backlog, nothing lost
    with sessions() as s:  # every dispatched signal has exactly its run's first step
        steps = s.scalar(select(func.count()).select_from(PlaybookStepRow))
    assert steps == done
    reads.dispose()
    engine.dispose()
