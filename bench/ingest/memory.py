"""Measurement 5's figures: a process's resident memory, and whether it kept growing."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any


def rss_kb(pid: int) -> int:
    """The process's resident set in KB (0 once it has gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_summary(samples: list[tuple[float, int, int]]) -> dict[str, Any]:
    """First, last and peak RSS, and whether it kept growing once warmed up.

    Growth compares the median of the last quarter of the samples with the median of the
    second quarter (the first quarter is warm-up: imports, pools, the account cache filling).
    """
    def mb(kb: float) -> float:
        return round(kb / 1024, 1)

    rss = [kb for _, _, kb in samples]
    q = [samples[min(len(samples) - 1, int(len(samples) * f))] for f in (0.1, 0.5, 1.0)]
    n = len(rss)
    second = rss[n // 4:max(n // 4 + 1, n // 2)]
    last = rss[(3 * n) // 4:] or rss[-1:]
    growth = statistics.median(last) - statistics.median(second)
    return {
        "rss_mb": {f"at_{done}_events": mb(kb) for _, done, kb in q},
        "rss_first_mb": mb(rss[0]), "rss_last_mb": mb(rss[-1]), "rss_peak_mb": mb(max(rss)),
        "rss_growth_mb": mb(growth), "rss_samples": n,
        # flat: less than 5% (and 8 MB) more in the last quarter than in the second
        "rss_flat": growth < max(8 * 1024, 0.05 * statistics.median(second)),
    }
