"""Measurement 2c: the full pipeline over a backlog read with the billing topic held back."""

from __future__ import annotations

import threading
import time
from typing import Any

from prometheus_client import REGISTRY

from bench.ingest.pipeline import in_process_loop, records_in
from bench.ingest.rebuilds import timing_rebuilds
from bench.topics import encoded, fresh_topics, produce
from bench.workload import events

RESEQUENCED = "laer_resequenced_events_total"


def _steady(marks: list[tuple[float, int]], started: float) -> tuple[int, float]:
    """Records and seconds from the first committed batch to the last, as `measure_pipeline`
    times them (from `started` when there was one batch only)."""
    (first_t, first_n), (last_t, last_n) = marks[0], marks[-1]
    if last_t > first_t:
        return last_n - first_n, last_t - first_t
    return last_n, last_t - started


def _counter(name: str) -> float | None:
    """A counter of this process's registry, summed over its labels (None if unregistered)."""
    values = [s.value for metric in REGISTRY.collect() for s in metric.samples if s.name == name]
    return sum(values) if values else None


def measure_held_back(bootstrap: str, partitions: int, n: int, db_url: str) -> dict[str, Any]:
    """`ConsumerLoop` in this process; billing is published once usage and support are read.

    The N events are those of the pipeline run (other accounts). While usage and support are
    read, no account has landed: every event is parked. Then billing's landings apply them,
    and billing's later events arrive after a year of the account's usage and support in
    event time: each is re-sequenced (the account rebuilt in event-time order), counted by
    the consumer's `laer_resequenced_events_total`. Each phase is timed from its first
    committed batch to its last; the rate is both phases' records over both phases' time.
    The second phase starts when billing starts to be published (a bulk send of a few
    thousand records, a fraction of the phase) and ends with the commit of its last record.
    The account rebuilds are timed meanwhile (`bench.ingest.rebuilds`).
    """
    topics = fresh_topics(bootstrap, partitions)
    billing = topics.by_family["billing"]
    records = list(encoded(topics, events(n, seed=9, prefix="hb")))
    held = [r for r in records if r[0] == billing]
    first = [r for r in records if r[0] != billing]
    produce(bootstrap, first)
    loop, engine = in_process_loop(bootstrap, topics, db_url, "bench-held")
    marks: list[tuple[float, int]] = []  # (commit time, records so far) of the first phase
    read_first, done = threading.Event(), threading.Event()
    total = 0
    finished = 0.0

    def on_batch(report: Any) -> None:
        nonlocal total, finished
        total += records_in(report)
        if not read_first.is_set():
            marks.append((time.perf_counter(), total))
        if total >= len(first):
            read_first.set()
        if total >= n:
            finished = time.perf_counter()
            loop.stop()
            done.set()

    resequenced_before = _counter(RESEQUENCED) or 0.0
    loop.on_batch = on_batch
    thread = threading.Thread(target=loop.run)
    with timing_rebuilds() as rebuilds:
        started = time.perf_counter()
        thread.start()
        try:
            if not read_first.wait(timeout=3600):
                raise RuntimeError("usage and support were not read to their end within an hour")
            released = time.perf_counter()
            produce(bootstrap, held)
            if not done.wait(timeout=3600):
                raise RuntimeError("the held-back billing events were not read within an hour")
        finally:
            loop.stop()
            thread.join(timeout=60)
            engine.dispose()
    resequenced = _counter(RESEQUENCED)
    if resequenced is None:
        raise RuntimeError(f"the consumer exposes no {RESEQUENCED}")
    n1, s1 = _steady(marks, started)
    n2, s2 = len(held), finished - released
    return {"events": total, "held_back": len(held), "seconds": round(s1 + s2, 2),
            "rate": round((n1 + n2) / (s1 + s2)) if s1 + s2 > 0 else 0,
            "first_phase": {"events": len(first), "rate": round(n1 / s1) if s1 > 0 else 0},
            "held_phase": {"events": len(held), "rate": round(n2 / s2) if s2 > 0 else 0},
            "resequenced": round(resequenced - resequenced_before),
            "rebuilds": rebuilds.summary()}
