"""Summaries of repeated measurements: medians of runs, percentiles of latencies."""

from __future__ import annotations

import statistics
from typing import Any


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median rate of several runs (the mean of the middle two if even), with every run."""
    rates = [r["rate"] for r in runs]
    first = runs[0]
    summary = {k: v for k, v in first.items() if k not in ("rate", "seconds", "events")}
    return {**summary, "events": max(r["events"] for r in runs),
            "rate": round(statistics.median(rates)), "passes": len(runs), "rates": rates,
            "runs": runs}


def percentile(ordered: list[float], q: float) -> float:
    """The `q` quantile of an ascending list (nearest rank, never past its ends)."""
    return ordered[max(0, int(len(ordered) * q) - 1)]
