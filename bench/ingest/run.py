"""The ingestion benchmark's command line: each measurement in turn, the table, the JSON."""

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

import bench.ingest
from bench.database import PG_DEFAULT, reset
from bench.ingest.floor import measure_floor
from bench.ingest.held_back import measure_held_back
from bench.ingest.latency import measure_latency
from bench.ingest.pipeline import measure_pipeline
from bench.ingest.processes import measure_processes
from bench.ingest.raw import measure_raw
from bench.ingest.report import report
from bench.stats import median_run
from bench.topics import encoded, fresh_topics, produce
from bench.workload import events
from laer.local.kafka import LocalKafka
from laer.local.ports import free_port

RESULTS = Path(__file__).parents[1] / "results" / "ingest.json"


def _arguments() -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.ingest",
                                 description=(bench.ingest.__doc__ or "").partition("\n")[0])
    ap.add_argument("--events", type=int, default=50_000, help="N for raw and pipeline runs")
    ap.add_argument("--rate", type=float, default=1000.0, help="events/s of the latency run")
    ap.add_argument("--latency-seconds", type=float, default=15.0)
    ap.add_argument("--scale-events", type=int, default=60_000,
                    help="events of the one-vs-two process runs")
    ap.add_argument("--scale-rounds", type=lambda v: max(1, int(v)), default=2,
                    help="measurements of each of one and two processes (medians reported)")
    ap.add_argument("--scale-mode", choices=("backlog", "live"), default="backlog",
                    help="one-vs-two runs: consume a backlog produced beforehand, or events "
                         "produced meanwhile by this process (which takes CPU from them)")
    ap.add_argument("--long", type=int, default=30_000, help="events of the memory run")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--postgres", default=os.environ.get("LAER_BENCH_POSTGRES_URL", PG_DEFAULT))
    ap.add_argument("--bootstrap", help="use this broker instead of starting one")
    ap.add_argument("--out", type=Path, default=RESULTS)
    return ap.parse_args()


def _measure(args: argparse.Namespace, bootstrap: str, home: Path, console: Console,
             results: dict[str, Any]) -> None:
    """Every measurement in turn, each result into `results` as soon as it is taken."""
    main_topics = fresh_topics(bootstrap, args.partitions)
    console.print(f"producing {args.events} events ...")
    t0 = time.perf_counter()
    produce(bootstrap, encoded(main_topics, events(args.events)))
    results["produce"] = {"events": args.events,
                          "rate": round(args.events / (time.perf_counter() - t0))}
    console.print("1. raw kafka-python consumption ...")
    results["raw"] = measure_raw(bootstrap, main_topics, args.events)
    console.print("1b. floor: poll, parse, dedup ledger and offsets (PostgreSQL) ...")
    results["floor_postgresql"] = measure_floor(
        bootstrap, main_topics, args.events, reset(args.postgres, home))
    console.print("2. full pipeline on SQLite ...")
    results["pipeline_sqlite"] = measure_pipeline(
        bootstrap, main_topics, args.events, reset("sqlite", home))
    console.print("2. full pipeline on PostgreSQL ...")
    results["pipeline_postgresql"] = measure_pipeline(
        bootstrap, main_topics, args.events, reset(args.postgres, home))
    # latency right after the PostgreSQL pipeline, where it was before the held-back row
    # existed: an A/B against older code (bench.ingest.ab) measures both after the same work
    console.print(f"3. latency at {args.rate:.0f} events/s (PostgreSQL) ...")
    results["latency_postgresql"] = measure_latency(
        bootstrap, fresh_topics(bootstrap, args.partitions), reset(args.postgres, home),
        args.rate, args.latency_seconds)
    console.print("2c. full pipeline, billing held back until usage and support are read "
                  "(PostgreSQL) ...")
    results["held_back_postgresql"] = measure_held_back(
        bootstrap, args.partitions, args.events, reset(args.postgres, home))
    console.print("4. one vs two consumer processes (PostgreSQL) ...")
    backlog = args.scale_mode == "backlog"
    # rounds in the order 1, 2, 2, 1, ...: a slow spell of the machine hits both sides
    runs: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    for i in range(args.scale_rounds):
        for count in ((1, 2) if i % 2 == 0 else (2, 1)):
            runs[count].append(measure_processes(
                bootstrap, fresh_topics(bootstrap, args.partitions), reset(args.postgres, home),
                args.scale_events, count, home, backlog=backlog))
    results["one_process"] = median_run(runs[1])
    results["two_processes"] = median_run(runs[2])
    results["scale_ratio_by_round"] = [round(two["rate"] / one["rate"], 2) if one["rate"]
                                       else None for one, two in zip(runs[1], runs[2],
                                                                     strict=True)]
    console.print(f"5. memory over {args.long} events (one process, PostgreSQL) ...")
    results["long_run"] = measure_processes(
        bootstrap, fresh_topics(bootstrap, args.partitions), reset(args.postgres, home),
        args.long, 1, home, sample_rss=True)


def main() -> None:
    """Run the benchmark on the given broker or a local one; print the table, write JSON."""
    args = _arguments()
    console = Console()
    home = Path(tempfile.mkdtemp(prefix="laer-bench-"))
    broker: LocalKafka | None = None
    if args.bootstrap:
        bootstrap = args.bootstrap
    else:
        # A new group's first assignment waits 8 s for more members (Kafka's default is 3 s;
        # the local broker's 0 suits tests): two `laer consume` processes started together
        # on 2 busy cores can join more than 3 s apart, and the first then consumed a quarter
        # of the backlog alone. With 8 s the one-vs-two runs start with both in the group.
        broker = LocalKafka(home / "kafka", port=free_port(),
                            overrides={"group.initial.rebalance.delay.ms": "8000"})
        console.print(f"starting a broker on :{broker.port} ...")
        broker.start()
        bootstrap = broker.bootstrap
    results: dict[str, Any] = {"started_at": datetime.now(UTC).isoformat(),
                               "cpus": os.cpu_count(), "args": {
                                   k: str(v) for k, v in vars(args).items()}}
    try:
        _measure(args, bootstrap, home, console, results)
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(home, ignore_errors=True)
    console.print(report(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"written to {args.out}")
