"""What event-time alignment costs a live stream: how long each record waits in the aligner."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from bench.stats import percentile
from consumers.align import Aligner, Item, Released


@dataclass
class HoldTimes:
    """Seconds from a record's arrival in the aligner (`add`) to its release, per record."""

    holds: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """p50, p99 and max in milliseconds, over every released record."""
        ordered = sorted(self.holds)
        if not ordered:
            return {"records": 0}
        return {"records": len(ordered), "p50_ms": round(1000 * percentile(ordered, 0.5), 2),
                "p99_ms": round(1000 * percentile(ordered, 0.99), 2),
                "max_ms": round(1000 * ordered[-1], 2)}


@contextmanager
def timing_holds() -> Iterator[HoldTimes]:
    """Time every record's stay in any `Aligner` of this process until the block ends.

    Wall time (the aligner's own clock leaves batch work out): a record that waits while
    other records are applied counts that wait. As `bench.ingest.rebuilds` does, the methods
    are wrapped in place and put back on leaving the block.
    """
    times = HoldTimes()
    arrived: dict[tuple[str, int, int], float] = {}
    add, release = Aligner.add, Aligner.release

    def timed_add(self: Aligner, items: Sequence[Item]) -> None:
        now = time.monotonic()
        for record, _ in items:
            arrived[(record.topic, record.partition, record.offset)] = now
        add(self, items)

    def timed_release(self: Aligner, everything: bool = False,
                      limit: int | None = None) -> Released:
        out = release(self, everything, limit)
        now = time.monotonic()
        for record, _ in out.items:
            since = arrived.pop((record.topic, record.partition, record.offset), None)
            if since is not None:
                times.holds.append(now - since)
        return out

    Aligner.add = timed_add  # type: ignore[method-assign]
    Aligner.release = timed_release  # type: ignore[method-assign]
    try:
        yield times
    finally:
        Aligner.add = add  # type: ignore[method-assign]
        Aligner.release = release  # type: ignore[method-assign]
