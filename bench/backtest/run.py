"""The backtest's speed on the simulated cohort scaled up, and (`--pipeline`) the live ingest
pipeline and raw kafka-python consumption over the same events on a local broker.

    python -m bench.backtest --accounts 2000 [--pipeline] [--limit-s S] [--out FILE]

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
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from backtest.engine import Backtest, BacktestOptions
from backtest.inputs import from_simulation
from backtest.stats import BacktestStats
from laer.cli.output import log_to_file


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


class _TimeUp(Exception):
    """The replay ran past --limit-s."""


def _pacer(limit_s: float | None, marks: list[dict[str, Any]]
           ) -> Callable[[BacktestStats], None]:
    """A progress callback: where the replay is every minute, and a stop after `limit_s`."""
    def progress(stats: BacktestStats) -> None:
        elapsed = stats.elapsed_or_now()
        if elapsed >= 60 * (len(marks) + 1) or stats.elapsed_s:
            marks.append({"seconds": round(elapsed), "events": stats.done,
                          "simulated_until": stats.now.isoformat() if stats.now else None,
                          "steps": sum(stats.steps.values()), "load": _load()})
        if limit_s is not None and elapsed > limit_s and not stats.elapsed_s:
            raise _TimeUp

    return progress


def measure_backtest(events: list[dict[str, Any]], home: Path, limit_s: float | None = None,
                     options: BacktestOptions | None = None) -> dict[str, Any]:
    """One replay of `events` into a new SQLite file: rates, CPU, what it did (with
    `limit_s`, stopped after that many seconds, and where it had got to each minute)."""
    load = _load()
    marks: list[dict[str, Any]] = []
    db = home / f"backtest-{time.monotonic_ns()}.db"
    bt = Backtest(f"sqlite:///{db}", options, progress=_pacer(limit_s, marks))
    try:
        bt.run(events)
    except _TimeUp:
        stats = bt.stats
        if not marks or marks[-1]["events"] != stats.done:
                marks.append({"seconds": round(stats.elapsed_s), "events": stats.done,
                          "simulated_until": stats.now.isoformat() if stats.now else None,
                          "steps": sum(stats.steps.values()), "load": _load()})
    finally:
        bt.close()
    stats = bt.stats
    return {"events": stats.done, "of_events": stats.events, "per_minute": marks,
            "stopped_at_limit": stats.done < stats.events,
            "seconds": round(stats.elapsed_s, 2),
            "rate": round(stats.events_per_s), "cpu_s": round(stats.cpu_s, 2),
            "events_per_cpu_s": round(stats.done / stats.cpu_s) if stats.cpu_s else None,
            "cpu_ms_per_event": round(1000 * stats.cpu_s / stats.done, 3) if stats.done else None,
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
    if ref := results.get("reference"):
        table.add_row("backtest, reference path (no shortcuts)", f"{ref['rate']:,}",
                      ratio(ref["rate"]), str(ref["seconds"]), str(ref["cpu_s"]),
                      ref["load_before"])
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
    parser.add_argument("--reference", action="store_true",
                        help="also replay on the reference path (no shortcuts), for before/after")
    parser.add_argument("--limit-s", type=float, default=None,
                        help="stop the replay after this many seconds (say how far it got)")
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
        results["backtest"] = measure_backtest(events, home, args.limit_s)
        if args.reference:
            console.print("again on the reference path (one transaction per window) ...")
            results["reference"] = measure_backtest(events, home, args.limit_s,
                                                    BacktestOptions(shortcuts=False))
        if args.pipeline:
            console.print("the same events through a local broker and the live pipeline ...")
            results["live"] = measure_live(events, home)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    if "live" in results:  # the anchor measured in the same run
        anchor = results["live"]["pipeline_sqlite"]["rate"]
        results["backtest_x_live_pipeline"] = round(results["backtest"]["rate"] / anchor, 4)
    console.print(report(results))
    for name in ("backtest", "reference"):
        if name in results:
            _details(console, name, results[name])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"written to {args.out}; library logs in {log_file}")


def _details(console: Console, name: str, bt: dict[str, Any]) -> None:
    """CPU, wall time and SQL statements by phase; how far a stopped replay got."""
    console.print(f"{name} CPU by phase (s): {bt['cpu_s_by_phase']}; "
                  f"wall by phase (s): {bt['wall_s_by_phase']}; "
                  f"SQL statements by phase: {bt['statements_by_phase']}; "
                  f"{bt['steps']} steps, {bt['signals']} signals, {bt['sweeps']} sweeps, "
                  f"{bt['batches']} event transactions")
    if bt["stopped_at_limit"]:
        console.print(f"stopped at --limit-s after {bt['events']} of {bt['of_events']} events")
    for mark in bt["per_minute"]:
        console.print(f"  {mark['seconds']} s: {mark['events']} events, {mark['steps']} steps, "
                      f"simulated until {mark['simulated_until']} (load {mark['load']})")
