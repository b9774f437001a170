"""The dispatcher beside a real Prefect server that is down, then up, on SQLite and on
PostgreSQL (the production backend): dispatching needs no Prefect (every signal starts one run,
its first step queued, whether Prefect answers or not), a second pass starts nothing, and while
Prefect is up the event feed gets one journey event per signal, linked to its first step's task
run. A signal the dispatcher cannot place ends `dispatch_failed`, visible in `laer account`,
and never holds back the signals after it."""

from __future__ import annotations

import asyncio
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.events.filters import EventFilter, EventNameFilter
from prefect.settings import PREFECT_API_URL, temporary_settings
from sqlalchemy import create_engine, func, select, text, update

from dispatch.dispatcher import Dispatcher
from dispatch.settings import PrefectSettings
from flows.kit.registry import Playbook
from laer.local.prefect_server import LocalPrefectServer
from laer_domain.model import Role
from laer_domain.signals import SignalKind
from persistence.db import make_engine, upgrade
from persistence.queries import account_detail
from persistence.steps import task_run_id
from persistence.tables import AccountRow, OutboxRow, PlaybookRunRow, PlaybookStepRow, SignalRow
from persistence.uow import session_factory
from tests.conftest import free_port

PROBE = Playbook(name="probe-noop", triggers=frozenset({SignalKind.WentLive}),
                 owner=Role.CUSTOMER_SUCCESS, priority=1)


@flow(name="probe-noop")
def probe_noop(account_id: str = "", signal_id: str = "") -> None:
    """Does nothing; only run creation matters here."""


def prefect_database(backend: str, postgres_url: str) -> str | None:
    if backend == "sqlite":
        return None
    # its own database beside the storage tests' (`<name>_prefect`, made by postgres.sh)
    admin = postgres_url.rsplit("/", 1)[0] + "/" + os.environ.get(
        "LAER_TEST_PREFECT_POSTGRES_DB", "laer_prefect_test")
    engine = create_engine(admin)
    with engine.begin() as conn:
        conn.execute(text("drop schema public cascade"))
        conn.execute(text("create schema public"))
    engine.dispose()
    return admin.replace("postgresql+psycopg://", "postgresql+asyncpg://")


def seed(sessions: object, n: int, first: int = 0) -> list[str]:
    now = datetime.now(UTC)
    ids = []
    with sessions() as s:  # type: ignore[operator]
        for i in range(first, first + n):
            account, sig = f"probe-{i}", f"sig-probe-{i}"
            s.add(AccountRow(id=account, stage="adopt", stage_since=now, owner="sales",
                             health_score=None, health_band=None, state={}, updated_at=now))
            s.flush()
            s.add(SignalRow(id=sig, seq=i, account_id=account, kind="WentLive", at=now,
                            stage="adopt", evidence={"rule": "probe"}))
            s.flush()
            s.add(OutboxRow(signal_id=sig, account_id=account, kind="WentLive",
                            created_at=now))
            ids.append(sig)
        s.commit()
    return ids


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_dispatch_needs_no_prefect_and_starts_each_run_once(backend: str, tmp_path: Path,
                                                            request: pytest.FixtureRequest
                                                            ) -> None:
    db_url = (request.getfixturevalue("postgres_url") if backend == "postgresql" else "")
    server = LocalPrefectServer(tmp_path / "prefect", port=free_port(),
                                database_url=prefect_database(backend, db_url))
    server.start()
    engine = make_engine(f"sqlite:///{tmp_path / 'laer.db'}")
    upgrade(engine)
    sessions = session_factory(engine)
    down = seed(sessions, 3)
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            server.stop()  # Prefect is down: dispatching goes on, the journey waits for none
            dispatcher = Dispatcher(sessions, [PROBE], emit_events=True)
            report = asyncio.run(dispatcher.drain())
            assert (report.started, report.signals) == (3, 3)

            server.start()  # back up
            up = seed(sessions, 3, first=3)
            first = asyncio.run(dispatcher.drain())
            again = asyncio.run(dispatcher.drain())
            assert (first.started, first.signals) == (3, 3) and again.signals == 0
            with sessions() as s:
                keys = sorted(s.scalars(select(PlaybookRunRow.idempotency_key)))
                steps = sorted(s.scalars(select(PlaybookStepRow.idempotency_key).where(
                    PlaybookStepRow.status == "due", PlaybookStepRow.step == "start")))
                left = s.scalar(select(func.count()).where(OutboxRow.status == "pending"))
            want = sorted(f"probe-noop/laer:{sig}" for sig in down + up)
            assert keys == want and steps == want and left == 0
            journey = asyncio.run(_journey_events(want=3))
            assert sorted(journey) == sorted(up)  # sent while Prefect was up: one each
            for sig, runs in journey.items():
                assert runs == [f"prefect.task-run.{task_run_id(f'probe-noop/laer:{sig}', 1)}"]
    finally:
        server.stop()
        engine.dispose()


def test_a_signal_that_cannot_be_dispatched_ends_dispatch_failed(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'laer.db'}")
    upgrade(engine)
    sessions = session_factory(engine)
    bad, good = seed(sessions, 2)
    with sessions() as s:  # a kind this version does not know (a newer producer wrote it)
        s.execute(update(SignalRow).where(SignalRow.id == bad).values(kind="NotAKind"))
        s.commit()
    dispatcher = Dispatcher(sessions, [PROBE], PrefectSettings(dispatch_attempts=3),
                            emit_events=False)
    reports = [asyncio.run(dispatcher.drain()) for _ in range(4)]
    assert [(r.signals, r.failed) for r in reports] == [(1, 1), (0, 1), (0, 1), (0, 0)]
    with sessions() as s:
        rows = {o.signal_id: o for o in s.scalars(select(OutboxRow))}
        detail = account_detail(s, "probe-0")
    assert rows[good].status == "done"  # the later signal went on at once
    assert (rows[bad].status, rows[bad].attempts) == ("dispatch_failed", 3)
    assert rows[bad].last_error is not None and "NotAKind" in rows[bad].last_error
    assert detail is not None
    (shown,) = detail["signals"]
    assert shown["dispatch"] == "dispatch_failed" and "NotAKind" in shown["dispatch_error"]
    engine.dispose()


async def _journey_events(want: int, timeout_s: float = 60) -> dict[str, list[str]]:
    """signal id -> the flow runs its `laer.signal.*` event links to, once `want` are stored."""
    deadline = time.monotonic() + timeout_s
    async with get_client() as client:
        while True:
            page = await client.read_events(filter=EventFilter(
                event=EventNameFilter(prefix=["laer.signal."])), limit=50)
            if page.total >= want or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
    found: dict[str, list[str]] = {}
    for event in page.events:
        sid = str(event.payload["signal_id"])
        assert sid not in found, f"two journey events for {sid}"
        found[sid] = [r.id for r in event.related if r.role == "task-run"]
    return found
