"""The dispatcher against a real Prefect server that goes down and comes back, on SQLite and
on PostgreSQL (the production backend): every signal starts exactly one run afterwards, and
the Prefect event feed gets one journey event per signal, linked to that run."""

from __future__ import annotations

import asyncio
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.client.schemas.sorting import FlowRunSort
from prefect.events.filters import EventFilter, EventNameFilter
from prefect.settings import PREFECT_API_URL, temporary_settings
from sqlalchemy import create_engine, select, text

from dispatch.dispatcher import Dispatcher
from flows.kit.registry import Playbook
from laer.local.prefect_server import LocalPrefectServer
from laer_domain.model import Role
from laer_domain.signals import SignalKind
from persistence.db import make_engine, upgrade
from persistence.tables import AccountRow, OutboxRow, PlaybookRunRow, SignalRow
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


def seed(sessions: object, n: int) -> list[str]:
    now = datetime.now(UTC)
    ids = []
    with sessions() as s:  # type: ignore[operator]
        for i in range(n):
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
def test_prefect_down_then_up_starts_each_run_exactly_once(backend: str, tmp_path: Path,
                                                          request: pytest.FixtureRequest
                                                          ) -> None:
    db_url = (request.getfixturevalue("postgres_url") if backend == "postgresql" else "")
    server = LocalPrefectServer(tmp_path / "prefect", port=free_port(),
                                database_url=prefect_database(backend, db_url))
    server.start()
    engine = make_engine(f"sqlite:///{tmp_path / 'laer.db'}")
    upgrade(engine)
    sessions = session_factory(engine)
    signals = seed(sessions, 6)
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            deployment_id = asyncio.run(_apply_deployment())
            server.stop()  # Prefect goes down before anything was dispatched

            dispatcher = Dispatcher(sessions, [PROBE], retry_for_s=1.0, emit_events=True)
            report = asyncio.run(dispatcher.drain())
            assert report.started == 0
            with sessions() as s:
                pending = list(s.scalars(select(OutboxRow).where(OutboxRow.status == "pending")))
                assert len(pending) == 6, "a signal was lost while Prefect was down"
                assert any(r.attempts >= 1 and r.last_error for r in pending)

            server.start()  # back up, same database
            first = asyncio.run(dispatcher.drain())
            again = asyncio.run(dispatcher.drain())
            assert first.started == 6 and first.signals == 6
            assert again.signals == 0
            runs_per_signal = asyncio.run(_runs_per_signal(deployment_id))
            assert runs_per_signal == {sig: 1 for sig in signals}
            with sessions() as s:
                keys = list(s.scalars(select(PlaybookRunRow.idempotency_key)))
                assert sorted(keys) == sorted(f"probe-noop/laer:{sig}" for sig in signals)
                run_of = {r.signal_id: r.flow_run_id for r in s.scalars(select(PlaybookRunRow))}
            # Signals refused while Prefect was down were announced once, after dispatch.
            journey = asyncio.run(_journey_events(want=6))
            assert sorted(journey) == sorted(signals)
            for sig, runs in journey.items():
                assert runs == [f"prefect.flow-run.{run_of[sig]}"]
    finally:
        server.stop()
        engine.dispose()


async def _apply_deployment() -> object:
    deployment = await probe_noop.ato_deployment(name="laer")
    return await deployment.apply()


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
        found[sid] = [r.id for r in event.related if r.role == "flow-run"]
    return found


async def _runs_per_signal(deployment_id: object) -> dict[str, int]:
    counts: dict[str, int] = {}
    async with get_client() as client:
        runs = await client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
            sort=FlowRunSort.ID_DESC, limit=200)
    for run in runs:
        sid = str((run.parameters or {}).get("signal_id"))
        counts[sid] = counts.get(sid, 0) + 1
    return counts
