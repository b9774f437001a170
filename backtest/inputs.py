"""Where a backtest's events come from: `laer simulate`'s cohort or a JSON Lines file."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def from_simulation(accounts: int = 200, seed: int = 7, days: int = 365) -> list[dict[str, Any]]:
    """The simulated cohort `laer simulate` publishes (same accounts and seed, same events)."""
    from laer.simulate import CohortSpec, cohort

    return cohort(CohortSpec(accounts=accounts, seed=seed, days=days))


def _open(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")


def from_file(path: Path) -> Iterator[dict[str, Any]]:
    """CloudEvents from a JSON Lines file (`.gz` read as gzip); a line that is not a JSON
    object comes through as `{}`, so it is counted as invalid rather than stopping the run."""
    with _open(path) as lines:
        for line in lines:
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                value = {}
            yield value if isinstance(value, dict) else {}


def write_file(path: Path, events: list[dict[str, Any]]) -> None:
    """Write events as JSON Lines (gzip if the name ends in .gz)."""
    opener = gzip.open(path, "wt", encoding="utf-8") if path.suffix == ".gz" else path.open(
        "w", encoding="utf-8")
    with opener as out:
        for event in events:
            out.write(json.dumps(event, separators=(",", ":")) + "\n")
