"""Run creation benchmark: a plain client loop versus the dispatcher draining stored signals.

    python -m bench.dispatch [--runs 200] [--rounds 6] [--burst 200]
                             [--backends sqlite,postgresql]

For each Prefect backend (a local server on SQLite, then on PostgreSQL) it measures, in one
run against the same server: a plain loop creating N flow runs from a deployment with one
client and a cached deployment id; the dispatcher draining N stored signals into runs. Each
is timed until the server has also stored the events it caused (every run's state event; the
dispatcher's journey event per signal). The dispatcher is measured once more with journey
events off, to show what they cost. The N runs are split into rounds that rotate which goes
first. Then a burst in which the dispatcher drains while concurrent creators overload the
server, after which it counts duplicated and lost runs. Prints a table; writes
bench/results/dispatch.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from flows.kit.registry import Playbook
from laer.local.ports import free_port
from laer.local.prefect_server import LocalPrefectServer
from laer_domain.model import Role, Stage
from laer_domain.signals import SignalKind
from persistence.db import make_engine, upgrade
from persistence.tables import AccountRow, OutboxRow, PlaybookRunRow, SignalRow
from persistence.uow import session_factory

RESULTS = Path(__file__).parent / "results" / "dispatch.json"
EMIT_EVENTS = os.environ.get("LAER_BENCH_EMIT_EVENTS", "1") == "1"
CONCURRENCY = int(os.environ.get("LAER_BENCH_CONCURRENCY", "1"))
PG_ADMIN = os.environ.get("LAER_BENCH_PG", "postgresql+psycopg://laer:laer@127.0.0.1:5432/laer_test")
BENCH_PLAYBOOK = Playbook(name="bench-noop", triggers=frozenset({SignalKind.WentLive}),
                          owner=Role.CUSTOMER_SUCCESS, priority=1)


def _prefect_database(backend: str) -> str | None:
    if backend == "sqlite":
        return None
    from sqlalchemy import create_engine, text

    name = f"laer_prefect_bench_{uuid.uuid4().hex[:6]}"
    engine = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f"create database {name}"))
    engine.dispose()
    user_pass_host = PG_ADMIN.split("://", 1)[1].rsplit("/", 1)[0]
    return f"postgresql+asyncpg://{user_pass_host}/{name}"


async def _deployment() -> Any:
    from prefect import flow

    @flow(name="bench-noop")
    def noop(account_id: str = "", signal_id: str = "") -> None:
        """Does nothing: only run creation is measured."""

    return await noop.ato_deployment(name="laer")


def _seed_signals(sessions: Any, n: int, tag: str) -> None:
    now = datetime.now(UTC)
    with sessions() as s:
        for i in range(n):
            account = f"bench-{tag}-{i:05d}"
            s.add(AccountRow(id=account, stage="adopt", stage_since=now, owner="sales",
                             health_score=None, health_band=None, state={}, updated_at=now))
            s.flush()
            sig = f"sig-{tag}-{i:05d}"
            s.add(SignalRow(id=sig, seq=i, account_id=account, kind="WentLive", at=now,
                            stage=Stage.ADOPT.value, evidence={"rule": "bench"}))
            s.flush()
            s.add(OutboxRow(signal_id=sig, account_id=account, kind="WentLive", created_at=now))
        s.commit()


async def _plain_loop(client: Any, deployment_id: Any, n: int, tag: str) -> None:
    for i in range(n):
        await client.create_flow_run_from_deployment(
            deployment_id, parameters={"account_id": f"plain-{tag}-{i}", "signal_id": str(i)},
            idempotency_key=f"plain:{tag}:{i}")


async def _drain_all(dispatcher: Any) -> None:
    while True:
        report = await dispatcher.drain(limit=200)
        if report.signals == 0:
            from sqlalchemy import func, select

            with dispatcher._factory() as s:  # noqa: SLF001 - benchmark peeks at the outbox
                if not s.scalar(select(func.count()).select_from(OutboxRow)
                                .where(OutboxRow.status == "pending")):
                    return
            await asyncio.sleep(0.2)


async def _stored_events(client: Any, prefix: str) -> int:
    """How many events whose name starts with `prefix` the server has persisted."""
    from prefect.events.filters import EventFilter, EventNameFilter

    page = await client.read_events(
        filter=EventFilter(event=EventNameFilter(prefix=[prefix])), limit=1)
    return int(page.total)


async def _wait_until_stored(client: Any, runs: int, journey: int,
                             timeout_s: float = 120) -> None:
    """Until the server has stored the events of `runs` created runs and `journey` signals.

    Both measurements wait like this after each round, so each pays for storing its own
    events (a run's state event; the dispatcher's journey event) and neither for the other's.
    """
    deadline = time.monotonic() + timeout_s
    while (await _stored_events(client, "prefect.flow-run.Scheduled") < runs
           or await _stored_events(client, "laer.signal.") < journey):
        if time.monotonic() > deadline:
            raise RuntimeError(f"Prefect stored the events of fewer than {runs} runs "
                               f"or {journey} signals")
        await asyncio.sleep(0.1)


async def _hammer(api_url: str, deployment_id: Any, seconds: float, tag: str) -> Counter[str]:
    """Concurrent creators that overload a small server (answers 503 or time out)."""
    import httpx

    outcomes: Counter[str] = Counter()
    deadline = time.monotonic() + seconds

    async def one(worker: int) -> None:
        async with httpx.AsyncClient(base_url=api_url, timeout=30) as http:
            i = 0
            while time.monotonic() < deadline:
                i += 1
                try:
                    r = await http.post(f"/deployments/{deployment_id}/create_flow_run", json={
                        "parameters": {"account_id": f"h{worker}", "signal_id": str(i)},
                        "idempotency_key": f"hammer:{tag}:{worker}:{i}"})
                    outcomes[str(r.status_code)] += 1
                except httpx.HTTPError as exc:
                    outcomes[type(exc).__name__] += 1

    await asyncio.gather(*(one(w) for w in range(12)))
    return outcomes


async def measure(backend: str, runs: int, burst: int, rounds: int,
                  console: Console) -> dict[str, Any]:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from dispatch.dispatcher import Dispatcher

    home = Path(tempfile.mkdtemp(prefix=f"bench-prefect-{backend}-"))
    server = LocalPrefectServer(home, port=free_port(), database_url=_prefect_database(backend))
    console.print(f"[{backend}] starting Prefect server ...")
    server.start()
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            deployment = await _deployment()
            deployment_id = await deployment.apply()
            tag = uuid.uuid4().hex[:6]
            db = make_engine(f"sqlite:///{home / 'laer.db'}")
            upgrade(db)
            sessions = session_factory(db)
            dispatchers = {
                "dispatcher": Dispatcher(sessions, [BENCH_PLAYBOOK], emit_events=EMIT_EVENTS,
                                         concurrency=CONCURRENCY),
                "dispatcher, no journey events": Dispatcher(
                    sessions, [BENCH_PLAYBOOK], emit_events=False, concurrency=CONCURRENCY)}
            kinds = ["plain", *dispatchers]
            seconds = dict.fromkeys(kinds, 0.0)
            per_round = max(1, runs // rounds)
            async with get_client() as client:
                await _plain_loop(client, deployment_id, 5, "warmup" + tag)
                created, announced = 5, 0
                # Rotate which goes first each round: the server slows as runs pile up, and
                # that must hit all alike.
                for r in range(rounds):
                    for kind in kinds[r % len(kinds):] + kinds[:r % len(kinds)]:
                        started = time.perf_counter()
                        created += per_round
                        if kind == "plain":
                            await _plain_loop(client, deployment_id, per_round, f"{r}{tag}")
                        else:
                            _seed_signals(sessions, per_round, f"d{r}{len(kind)}{tag}")
                            started = time.perf_counter()
                            await _drain_all(dispatchers[kind])
                            announced += per_round if dispatchers[kind]._emit else 0  # noqa: SLF001
                        await _wait_until_stored(client, created, announced)
                        seconds[kind] += time.perf_counter() - started
            rates = {kind: per_round * rounds / s for kind, s in seconds.items()}
            plain_rate, dispatch_rate = rates["plain"], rates["dispatcher"]
            quiet_rate = rates["dispatcher, no journey events"]
            console.print(f"[{backend}] runs/s over {rounds} rounds: "
                          + ", ".join(f"{k} {v:.1f}" for k, v in rates.items()))

            _seed_signals(sessions, burst, "b" + tag)
            burst_dispatcher = Dispatcher(sessions, [BENCH_PLAYBOOK], retry_for_s=120,
                                          emit_events=EMIT_EVENTS, concurrency=CONCURRENCY)
            hammer = asyncio.create_task(_hammer(server.api_url, deployment_id, 20, tag))
            await _drain_all(burst_dispatcher)
            hammer_outcomes = await hammer
            duplicated, lost = await _audit(client_factory=get_client, sessions=sessions,
                                            deployment_id=deployment_id, tag="b" + tag,
                                            expected=burst)
            console.print(f"[{backend}] burst: hammer answers {dict(hammer_outcomes)}; "
                          f"duplicated {duplicated}, lost {lost}")
            db.dispose()
    finally:
        server.stop()
    return {"backend": backend, "runs": runs, "rounds": rounds, "emit_events": EMIT_EVENTS,
            "plain_runs_per_s": round(plain_rate, 2),
            "dispatcher_runs_per_s": round(dispatch_rate, 2),
            "dispatcher_without_events_runs_per_s": round(quiet_rate, 2),
            "ratio_without_events": round(quiet_rate / plain_rate, 3),
            "ratio": round(dispatch_rate / plain_rate, 3), "burst_signals": burst,
            "burst_server_answers": dict(hammer_outcomes), "duplicated": duplicated,
            "lost": lost}


async def _audit(client_factory: Any, sessions: Any, deployment_id: Any, tag: str,
                 expected: int) -> tuple[int, int]:
    """Runs in Prefect per burst signal: more than one is a duplicate, none is a loss."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.sorting import FlowRunSort
    from sqlalchemy import select

    with sessions() as s:
        signal_ids = {sid for sid in s.scalars(select(SignalRow.id).where(
            SignalRow.id.like(f"sig-{tag}-%")))}
        recorded = Counter(s.scalars(select(PlaybookRunRow.signal_id).where(
            PlaybookRunRow.signal_id.in_(signal_ids))))
    per_signal: Counter[str] = Counter()
    async with client_factory() as client:
        offset = 0
        while True:
            page = await client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
                sort=FlowRunSort.ID_DESC, limit=200, offset=offset)
            if not page:
                break
            for run in page:
                sid = str((run.parameters or {}).get("signal_id"))
                if sid in signal_ids:
                    per_signal[sid] += 1
            offset += len(page)
    duplicated = sum(n - 1 for n in per_signal.values() if n > 1) + sum(
        n - 1 for n in recorded.values() if n > 1)
    lost = sum(1 for sid in signal_ids if per_signal[sid] == 0)
    assert len(signal_ids) == expected
    return duplicated, lost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200, help="runs per measurement")
    parser.add_argument("--rounds", type=int, default=6,
                        help="rounds the runs are split into, rotating which goes first")
    parser.add_argument("--burst", type=int, default=200, help="signals in the 503 burst")
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # No worker runs the created runs; the late-runs service would mark them all Late,
    # a storm of state changes that production (where workers start runs) never sees.
    os.environ.setdefault("PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED", "false")
    # The event persister writes every 20 events or after this pause; 1 s (not 5 s) keeps
    # the wait for the dispatcher's last few events from dominating a round.
    os.environ.setdefault("PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL", "1")
    console = Console()
    results = [asyncio.run(measure(b, args.runs, args.burst, args.rounds, console))
               for b in args.backends.split(",")]
    table = Table("Prefect backend", "plain loop runs/s", "dispatcher runs/s", "ratio",
                  "without journey events",
                  "burst: server answers", "duplicated", "lost",
                  title=f"Run creation, {args.runs} runs each")
    for r in results:
        table.add_row(r["backend"], f"{r['plain_runs_per_s']:.1f}",
                      f"{r['dispatcher_runs_per_s']:.1f}", f"{r['ratio']:.2f}",
                      f"{r['dispatcher_without_events_runs_per_s']:.1f} "
                      f"({r['ratio_without_events']:.2f})",
                      ", ".join(f"{k}: {v}" for k, v in sorted(r["burst_server_answers"].items())),
                      str(r["duplicated"]), str(r["lost"]))
    console.print(table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"measured_at": datetime.now(UTC).isoformat(),
                                   "results": results}, indent=2))
    console.print(f"figures written to {RESULTS}")


if __name__ == "__main__":
    main()
