"""The reactions benchmark's command line: each backend in turn, the table, the JSON."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import uuid
from datetime import UTC, datetime
from typing import Any, NoReturn

from rich.console import Console
from rich.markup import escape
from rich.table import Table

import bench.reactions

PG = "postgresql+psycopg://laer:laer@127.0.0.1:5432/laer_test"
PREFECT_PG = "postgresql+asyncpg://laer:laer@127.0.0.1:5432/laer_prefect_test"
TARGET_STEPS_PER_S = 50.0  # on the embedded default
TARGET_P99_S = 5.0
TARGET_RATIO = 10.0


def targets(result: dict[str, Any]) -> dict[str, bool | None]:
    """Which targets a backend's result met (None: not applicable or not measured)."""
    burst, steady = result["burst"], result["steady"]
    base = result["baseline"]["runs_per_s"]
    ratio = burst["steps_per_s"] / base if base else None
    p99 = steady["latency_p99_s"]
    return {
        "steps_per_s": (burst["steps_per_s"] >= TARGET_STEPS_PER_S
                        if result["backend"] == "embedded" else None),
        "p99": None if p99 is None else p99 < TARGET_P99_S,
        "nothing_lost": burst["lost"] + steady["lost"] == 0,
        "nothing_duplicated": sum(result["duplicated"].values()) == 0,
        "ratio": None if ratio is None else ratio >= TARGET_RATIO,
    }


def _mark(ok: bool | None) -> str:
    return "" if ok is None else (" [green]met[/green]" if ok else " [red]missed[/red]")


def _num(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:,.2f}{unit}"


def table(result: dict[str, Any]) -> Table:
    """One backend's figures with the targets marked."""
    burst, steady, base = result["burst"], result["steady"], result["baseline"]
    met = targets(result)
    ratio = burst["steps_per_s"] / base["runs_per_s"] if base["runs_per_s"] else None
    t = Table("measure", "value", "target",
              title=f"{result['backend']}: burst {burst['signals']}, steady "
                    f"{steady['signals']}, baseline {base['runs']} runs "
                    f"(steps read from {burst['source']})")
    t.add_row("steps/s (burst)", _num(burst["steps_per_s"]) + _mark(met["steps_per_s"]),
              f">= {TARGET_STEPS_PER_S:g} (embedded)")
    t.add_row("burst: first steps done / expected",
              f"{burst['expected_first_steps'] - burst['lost']} / "
              f"{burst['expected_first_steps']} in {burst['seconds']:g} s", "all")
    used = burst.get("cpu_ms_per_step") or {}
    t.add_row("CPU ms/step (burst)", ", ".join(f"{k} {v:g}" for k, v in used.items()) or "-",
              f"load {burst.get('load', 0):.1f}")
    t.add_row("latency p50 (steady)", _num(steady["latency_p50_s"], " s"), "")
    t.add_row("latency p99 (steady)", _num(steady["latency_p99_s"], " s") + _mark(met["p99"]),
              f"< {TARGET_P99_S:g} s")
    t.add_row("lost (burst + steady)", f"{burst['lost'] + steady['lost']}"
              + _mark(met["nothing_lost"]), "0")
    dup = result["duplicated"]
    t.add_row("duplicated (Message-IDs, Prefect runs, steps)",
              f"{dup['message_ids']}, {dup['prefect_runs']}, {dup['steps']}"
              + _mark(met["nothing_duplicated"]), "0")
    t.add_row("report lag (burst)", _num(burst["report_lag_s"], " s")
              if burst["report_lag_s"] is not None else "not shown within the bound", "")
    t.add_row("baseline runs/s (plain Prefect)",
              f"{base['runs_per_s']:,.2f} ({base['completed']}/{base['runs']} done)", "")
    t.add_row("ratio steps/s ÷ baseline runs/s", _num(ratio, "x") + _mark(met["ratio"]),
              f">= {TARGET_RATIO:g}x")
    return t


def _interrupt(signum: int, _frame: Any) -> NoReturn:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    """Measure each backend, print a table per backend (or the JSON)."""
    p = argparse.ArgumentParser(prog="python -m bench.reactions",
                                description=bench.reactions.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--burst", type=int, default=1000, help="signals in the burst")
    p.add_argument("--steady-rate", type=float, default=5.0, help="signals per second")
    p.add_argument("--steady-s", type=float, default=120.0, help="seconds of steady stream")
    p.add_argument("--baseline-runs", type=int, default=None,
                   help="trivial flow runs of the anchor (default: the burst size)")
    p.add_argument("--baseline-limit", type=int, default=8,
                   help="concurrent runs of the anchor's serve (as `laer serve --limit`)")
    p.add_argument("--bound-s", type=float, default=600.0,
                   help="how long a first step may take before it counts as lost")
    p.add_argument("--day-seconds", type=float, default=60.0,
                   help="LAER_PLAYBOOK_DAY_SECONDS (follow-ups stay out of the burst)")
    p.add_argument("--backends", default="embedded,postgresql")
    p.add_argument("--postgres", default=os.environ.get("LAER_BENCH_POSTGRES_URL", PG),
                   help="app database of the postgresql backend (emptied)")
    p.add_argument("--prefect-postgres",
                   default=os.environ.get("LAER_BENCH_PREFECT_POSTGRES_URL", PREFECT_PG),
                   help="Prefect's database of the postgresql backend (emptied)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON only")
    args = p.parse_args(argv)
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from bench.reactions.session import Options, run_backend

    o = Options(burst=args.burst, steady_rate=args.steady_rate, steady_s=args.steady_s,
                baseline_runs=args.baseline_runs or args.burst,
                baseline_limit=args.baseline_limit, bound_s=args.bound_s,
                day_seconds=args.day_seconds, postgres_url=args.postgres,
                prefect_postgres_url=args.prefect_postgres)
    progress = Console(stderr=True)
    signal.signal(signal.SIGTERM, _interrupt)
    tag = uuid.uuid4().hex[:4]
    results = []
    try:
        for backend in args.backends.split(","):
            with progress.status(escape(f"[{backend}] ...")):
                results.append(run_backend(backend, o, tag,
                                           lambda m: progress.log(escape(m))))
    except KeyboardInterrupt:
        progress.print("[red]interrupted: every child stopped[/red]")
        sys.exit(130)
    for r in results:
        r["targets"] = targets(r)
    if args.json:
        print(json.dumps({"measured_at": datetime.now(UTC).isoformat(),
                          "options": vars(args), "results": results}, indent=2))
        return
    out = Console()
    if o.baseline_runs != o.burst:
        out.print(f"baseline: {o.baseline_runs} runs (not the burst's {o.burst})")
    for r in results:
        out.print(table(r))
