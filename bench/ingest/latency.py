"""Measurement 3: produce -> committed latency at a fixed rate, from a producer process."""

from __future__ import annotations

import logging
import multiprocessing
import statistics
import threading
import time
from typing import Any

from bench.ingest.holds import timing_holds
from bench.ingest.pipeline import in_process_loop
from bench.stats import percentile
from bench.topics import Record, Topics, encoded, produce
from bench.workload import events


class _AssignmentWatch(logging.Handler):
    """Set `done` when this process's consumer logs its first non-empty assignment."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.done = threading.Event()
        self._logger = logging.getLogger("consumers.runner")
        self._level = self._logger.level
        self._logger.setLevel(logging.INFO)
        self._logger.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("partitions assigned: [("):
            self.done.set()

    def close(self) -> None:
        self._logger.removeHandler(self)
        self._logger.setLevel(self._level)
        super().close()


def _send_paced(bootstrap: str, records: list[Record], rate: float,
                out: Any) -> None:
    """Child process of `measure_latency`: send at `rate`, report each record's send time."""
    sent_at: dict[tuple[str, int, int], float] = {}
    produce(bootstrap, records, rate=rate, sent_at=sent_at,
            warm_topics=sorted({topic for topic, _, _, _ in records}))
    out.put(sent_at)


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def measure_latency(bootstrap: str, topics: Topics, db_url: str, rate: float,
                    seconds: float, warmup: float = 2.0) -> dict[str, Any]:
    """Produce at `rate`; latency = commit of the batch that covers a record - its send.

    Reported over every record, with the part spent held by event-time alignment (from
    arrival in the aligner to release), and again without the records sent in the first `warmup`
    seconds (a consumer that has just joined parses its first accounts and warms its caches
    and connections: that start-up tail is real, but once per process, not per second).

    The producer is a process of its own, as a real source is: in this process its thread
    would compete with the consumer for the interpreter lock. Both sides stamp with
    `time.monotonic()` (CLOCK_MONOTONIC, one clock for every process of the machine).
    """
    loop, engine = in_process_loop(bootstrap, topics, db_url, "bench-lat")
    committed: dict[tuple[str, int], int] = {}
    commits: list[tuple[str, int, int, int, float]] = []  # topic, partition, from, to, at

    def on_batch(report: Any) -> None:
        now = time.monotonic()
        for (t, p), nxt in report.next_offsets.items():
            commits.append((t, p, committed.get((t, p), 0), nxt, now))
            committed[(t, p)] = nxt

    loop.on_batch = on_batch
    assigned = _AssignmentWatch()
    thread = threading.Thread(target=loop.run)
    n = int(rate * seconds)
    with timing_holds() as holds:
        thread.start()
        try:  # joined and idle (the topics of this phase are empty)
            if not assigned.done.wait(60):
                raise RuntimeError("the consumer was never assigned partitions")
        finally:
            assigned.close()
        time.sleep(0.5)
        records = list(encoded(topics, events(n, seed=3, prefix="lat")))
        spawn = multiprocessing.get_context("spawn")
        out = spawn.Queue()
        child = spawn.Process(target=_send_paced, args=(bootstrap, records, rate, out))
        child.start()
        sent_at: dict[tuple[str, int, int], float] = out.get(timeout=seconds * 4 + 120)
        child.join(timeout=60)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and sum(committed.values()) < n:
            time.sleep(0.2)
        loop.stop()
        thread.join(timeout=60)
    engine.dispose()
    pairs = [(sent_at[(t, p, off)], at - sent_at[(t, p, off)])
             for t, p, frm, nxt, at in list(commits)
             for off in range(frm, nxt) if (t, p, off) in sent_at]
    if not pairs:
        return {"events": 0}
    first = min(sent for sent, _ in pairs)
    lat = sorted(latency for _, latency in pairs)
    steady = sorted(latency for sent, latency in pairs if sent - first >= warmup)
    by_second: dict[int, list[float]] = {}
    for sent, latency in pairs:
        by_second.setdefault(int(sent - first), []).append(latency)
    return {"events": len(lat), "rate": rate, "p50_ms": _ms(percentile(lat, 0.5)),
            "p99_ms": _ms(percentile(lat, 0.99)),
            "max_ms": _ms(lat[-1]), "mean_ms": _ms(statistics.mean(lat)),
            "warmup_s": warmup, "steady_events": len(steady),
            "steady_p50_ms": _ms(percentile(steady, 0.5)) if steady else None,
            "steady_p99_ms": _ms(percentile(steady, 0.99)) if steady else None,
            # where the tail comes from: p99 of the records sent in each second of the run
            "p99_ms_by_second": [_ms(percentile(sorted(v), 0.99))
                                 for _, v in sorted(by_second.items())],
            # of which waiting for the other topics (consumers.align), per record
            "align_hold": holds.summary()}
