"""A/B of `bench.ingest` against an older checkout: the two run in turn, on the same machine,
and the pipeline rate and latency rows are compared round by round, with the raw read beside.

    git worktree add /tmp/laer-base 3fcc434 && (cd /tmp/laer-base && python3.11 -m venv .venv
        && .venv/bin/pip install -q -c constraints.txt -e '.[test]')
    .venv/bin/python -m bench.ingest.ab --baseline /tmp/laer-base --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROWS: tuple[tuple[str, str, str, bool], ...] = (
    # label, result key, field, higher is better
    ("raw kafka-python read (anchor), ev/s", "raw", "rate", True),
    ("pipeline SQLite, ev/s", "pipeline_sqlite", "rate", True),
    ("pipeline PostgreSQL, ev/s", "pipeline_postgresql", "rate", True),
    ("latency p50, ms", "latency_postgresql", "p50_ms", False),
    ("latency p99, ms", "latency_postgresql", "p99_ms", False),
    ("latency steady p99, ms", "latency_postgresql", "steady_p99_ms", False),
)


def _arguments() -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.ingest.ab",
                                 description=(__doc__ or "").partition("\n")[0])
    ap.add_argument("--baseline", type=Path, required=True,
                    help="checkout of the older code, with its own .venv")
    ap.add_argument("--rounds", type=int, default=3, help="runs of each side, alternating")
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--latency-seconds", type=float, default=15.0)
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--out", type=Path, default=Path("bench/results/ingest-ab.json"))
    return ap.parse_args()


def _run(checkout: Path, args: argparse.Namespace, out: Path, log: Path) -> dict[str, Any]:
    """One `bench.ingest` run in `checkout`, rows other than pipeline and latency kept short."""
    cmd = [str(checkout / ".venv/bin/python"), "-m", "bench.ingest",
           "--events", str(args.events), "--latency-seconds", str(args.latency_seconds),
           "--scale-events", "2000", "--scale-rounds", "1", "--long", "2000",
           "--out", str(out)]
    with log.open("a") as f:
        subprocess.run(cmd, cwd=checkout, stdout=f, stderr=subprocess.STDOUT, check=True)
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def _value(result: dict[str, Any], key: str, field: str) -> float | None:
    v = result.get(key, {}).get(field)
    return float(v) if v is not None else None


def main() -> None:
    """Alternate baseline and current runs; print each row per round, medians and ratios."""
    args = _arguments()
    console = Console(stderr=args.json, width=150)  # the table stays readable when piped
    here = Path.cwd()
    work = Path(tempfile.mkdtemp(prefix="laer-ab-"))
    log = work / "runs.log"
    sides: dict[str, list[dict[str, Any]]] = {"baseline": [], "current": []}
    for i in range(args.rounds):
        order = ("baseline", "current") if i % 2 == 0 else ("current", "baseline")
        for side in order:
            checkout = args.baseline if side == "baseline" else here
            t0 = time.monotonic()
            console.print(f"round {i + 1}/{args.rounds}: {side} ({checkout}) ...")
            sides[side].append(_run(checkout, args, work / f"{side}-{i}.json", log))
            console.print(f"  done in {time.monotonic() - t0:.0f}s")
    figures = {label: {side: [_value(r, key, field) for r in runs]
                       for side, runs in sides.items()}
               for label, key, field, _ in ROWS}
    summary: dict[str, Any] = {"baseline": str(args.baseline), "rounds": args.rounds,
                               "events": args.events, "rows": {}}
    table = Table(title=f"bench.ingest A/B, {args.rounds} rounds each, alternating")
    for col in ("row", "baseline runs", "current runs", "medians", "current / baseline"):
        table.add_column(col)
    for label, _, _, higher in ROWS:
        base = [v for v in figures[label]["baseline"] if v is not None]
        cur = [v for v in figures[label]["current"] if v is not None]
        mb = statistics.median(base) if base else None
        mc = statistics.median(cur) if cur else None
        ratio = round(mc / mb, 3) if mb and mc else None
        summary["rows"][label] = {"baseline": base, "current": cur, "ratio": ratio}
        change = "" if ratio is None else (
            f"{ratio:.2f}x ({'better' if (ratio >= 1) == higher else 'worse'})")
        table.add_row(label, " / ".join(f"{v:g}" for v in base),
                      " / ".join(f"{v:g}" for v in cur), f"{mb:g} vs {mc:g}" if mb and mc
                      else "", change)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    if args.json:
        json.dump(summary, sys.stdout, indent=2)
        print()
    else:
        console.print(table)
        console.print(f"written to {args.out}; run logs in {log}")


if __name__ == "__main__":
    main()
