"""The backtest's speed on the simulated cohort scaled up, and (`--pipeline`) the live ingest
pipeline and raw kafka-python consumption over the same events on a local broker.

    python -m bench.backtest --accounts 2000 [--pipeline] [--out bench/results/backtest.json]

Wall-clock rates swing with whatever else runs on the machine: the table gives the CPU time
of the backtest by phase and the load average beside each figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from backtest.engine import Backtest
from backtest.inputs import from_simulation
from laer.cli.output import log_to_file


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def measure_backtest(events: list[dict[str, Any]], home: Path) -> dict[str, Any]:
    """One replay of `events` into a new SQLite file: rates, CPU, what it did."""
    load = _load()
    bt = Backtest(f"sqlite:///{home / 'backtest.db'}")
    try:
        stats = bt.run(events)
    finally:
        bt.close()
    return {"events": stats.done, "seconds": round(stats.elapsed_s, 2),
            "rate": round(stats.events_per_s), "cpu_s": round(stats.cpu_s, 2),
            "events_per_cpu_s": round(stats.done / stats.cpu_s) if stats.cpu_s else None,
            "steps": sum(stats.steps.values()), "signals": stats.signals,
            "runs": stats.runs_started, "sweeps": stats.sweeps, "batches": stats.batches,
            "cpu_s_by_phase": {k: round(v, 2) for k, v in stats.phases.items()},
            "wall_s_by_phase": {k: round(v, 2) for k, v in stats.phases_wall.items()},
            "statements_by_phase": dict(stats.statements),
            "load_before": load, "load_after": _load()}


def measure_live(events: list[dict[str, Any]], home: Path) -> dict[str, Any]:
    """The same events through a local broker: raw consumption and the full pipeline."""
    from bench.database import reset
    from bench.ingest.pipeline import measure_pipeline
    from bench.ingest.raw import measure_raw
    from bench.topics import encoded, fresh_topics, produce
    from laer.local.kafka import LocalKafka
    from laer.local.ports import free_port

    broker = LocalKafka(home / "kafka", port=free_port())
    broker.start()
    try:
        topics = fresh_topics(broker.bootstrap, 3)
        produce(broker.bootstrap, encoded(topics, events))
        load = _load()
        raw = measure_raw(broker.bootstrap, topics, len(events), passes=3)
        cpu = time.process_time()
        pipeline = measure_pipeline(broker.bootstrap, topics, len(events),
                                    reset("sqlite", home))
        pipeline["cpu_s"] = round(time.process_time() - cpu, 2)
        pipeline["load_before"], pipeline["load_after"] = load, _load()
        return {"raw": raw, "pipeline_sqlite": pipeline}
    finally:
        broker.stop()


def report(results: dict[str, Any]) -> Table:
    """The table: one row per measurement."""
    table = Table(title=f"backtest of {results['accounts']} simulated accounts, "
                  f"{results['events']} events ({results['cpus']} CPUs)")
    for col in ("measurement", "events/s", "x live pipeline", "seconds", "CPU s",
                "load (1, 5, 15 min)"):
        table.add_column(col, justify="left" if col == "measurement" else "right")
    bt = results["backtest"]
    live = results.get("live")
    anchor = live["pipeline_sqlite"]["rate"] if live else None

    def ratio(rate: float) -> str:
        return f"{rate / anchor:.3g}x" if anchor else ""

    table.add_row("backtest: rules, playbooks, simulated clock",
                  f"{bt['rate']:,}", ratio(bt["rate"]), str(bt["seconds"]), str(bt["cpu_s"]),
                  bt["load_before"])
    if live:
        p = live["pipeline_sqlite"]
        table.add_row("live pipeline, SQLite: rules only",
                      f"{p['rate']:,}", "1x", str(p["seconds"]), str(p.get("cpu_s", "")),
                      p.get("load_before", ""))
        raw = live["raw"]["rate"]
        table.add_row("raw kafka-python reads", f"{raw:,}", ratio(raw), "", "", "")
    return table


def main() -> None:
    """Replay the cohort (and with --pipeline, read it live); print the table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--pipeline", action="store_true",
                        help="also measure the live pipeline on a local broker")
    parser.add_argument("--out", type=Path, default=Path("bench/results/backtest.json"))
    args = parser.parse_args()
    console = Console()
    log_file = log_to_file(args.out.with_suffix(".log"))
    events = from_simulation(accounts=args.accounts, seed=args.seed)
    home = Path(tempfile.mkdtemp(prefix="laer-bench-backtest-"))
    results: dict[str, Any] = {"started_at": datetime.now(UTC).isoformat(),
                               "cpus": os.cpu_count(), "accounts": args.accounts,
                               "events": len(events)}
    try:
        console.print(f"replaying {len(events)} events of {args.accounts} accounts ...")
        results["backtest"] = measure_backtest(events, home)
        if args.pipeline:
            console.print("the same events through a local broker and the live pipeline ...")
            results["live"] = measure_live(events, home)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    if "live" in results:  # the anchor measured in the same run
        anchor = results["live"]["pipeline_sqlite"]["rate"]
        results["backtest_x_live_pipeline"] = round(results["backtest"]["rate"] / anchor, 4)
    console.print(report(results))
    bt = results["backtest"]
    console.print(f"backtest CPU by phase (s): {bt['cpu_s_by_phase']}; "
                  f"wall by phase (s): {bt['wall_s_by_phase']}; "
                  f"SQL statements by phase: {bt['statements_by_phase']}; "
                  f"{bt['steps']} steps, {bt['signals']} signals, {bt['sweeps']} sweeps, "
                  f"{bt['batches']} event transactions")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"written to {args.out}; library logs in {log_file}")
