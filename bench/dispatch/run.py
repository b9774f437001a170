"""The run-creation benchmark's command line: each backend's server in turn, the table, JSON."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

import bench.dispatch
from bench.dispatch.burst import measure_burst
from bench.dispatch.outbox import EMIT_EVENTS
from bench.dispatch.rate import measure_rates
from bench.dispatch.server import deployment, prefect_database
from laer.local.ports import free_port
from laer.local.prefect_server import LocalPrefectServer
from persistence.db import make_engine, upgrade
from persistence.uow import session_factory

RESULTS = Path(__file__).parents[1] / "results" / "dispatch.json"


async def measure(backend: str, runs: int, burst: int, rounds: int,
                  console: Console) -> dict[str, Any]:
    """Both measurements against one new Prefect server on `backend`."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    home = Path(tempfile.mkdtemp(prefix=f"bench-prefect-{backend}-"))
    server = LocalPrefectServer(home, port=free_port(), database_url=prefect_database(backend))
    console.print(f"[{backend}] starting Prefect server ...")
    server.start()
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            deployment_id = await (await deployment()).apply()
            tag = uuid.uuid4().hex[:6]
            db = make_engine(f"sqlite:///{home / 'laer.db'}")
            upgrade(db)
            sessions = session_factory(db)
            async with get_client() as client:
                rates = await measure_rates(client, deployment_id, sessions, runs, rounds, tag)
            plain_rate, dispatch_rate = rates["plain"], rates["dispatcher"]
            quiet_rate = rates["dispatcher, no journey events"]
            console.print(f"[{backend}] runs/s over {rounds} rounds: "
                          + ", ".join(f"{k} {v:.1f}" for k, v in rates.items()))
            hammer_outcomes, duplicated, lost = await measure_burst(
                server.api_url, deployment_id, sessions, burst, tag)
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


def _table(results: list[dict[str, Any]], runs: int) -> Table:
    table = Table("Prefect backend", "plain loop runs/s", "dispatcher runs/s", "ratio",
                  "without journey events",
                  "burst: server answers", "duplicated", "lost",
                  title=f"Run creation, {runs} runs each")
    for r in results:
        table.add_row(r["backend"], f"{r['plain_runs_per_s']:.1f}",
                      f"{r['dispatcher_runs_per_s']:.1f}", f"{r['ratio']:.2f}",
                      f"{r['dispatcher_without_events_runs_per_s']:.1f} "
                      f"({r['ratio_without_events']:.2f})",
                      ", ".join(f"{k}: {v}" for k, v in sorted(r["burst_server_answers"].items())),
                      str(r["duplicated"]), str(r["lost"]))
    return table


def main() -> None:
    """Measure each backend, print the table, write the figures."""
    parser = argparse.ArgumentParser(prog="python -m bench.dispatch",
                                     description=bench.dispatch.__doc__,
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
    console.print(_table(results, args.runs))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"measured_at": datetime.now(UTC).isoformat(),
                                   "results": results}, indent=2))
    console.print(f"figures written to {RESULTS}")
