"""Measurements 4 and 5: `laer consume` processes in one group (one vs two; RSS of one)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench.database import consumed
from bench.ingest.memory import rss_kb, rss_summary
from bench.topics import Record, Topics, encoded, produce
from bench.workload import events
from laer.local.processes import ManagedProcess
from persistence.db import make_engine, upgrade

ASSIGNED = "partitions assigned: [("  # what `laer consume` logs once it owns partitions


def _all_own_partitions(procs: list[ManagedProcess]) -> bool:
    """Whether every process's latest rebalance left it with partitions."""
    logs = [p.log_path.read_text() if p.log_path.exists() else "" for p in procs]
    return all(ASSIGNED in log for log in logs) and \
        all(log.rfind(ASSIGNED) > log.rfind("revoked: [(") for log in logs)


def _largest_rss(procs: list[ManagedProcess]) -> int:
    return max(rss_kb(p.process.pid) for p in procs if p.process)


def measure_processes(bootstrap: str, topics: Topics, db_url: str, n: int, count: int,
                      home: Path, sample_rss: bool = False, backlog: bool = False
                      ) -> dict[str, Any]:
    """`count` `laer consume` processes in one group; stops when the database holds all
    offsets.

    Live (default): the clock starts when all own partitions, and the events are produced
    meanwhile by a thread of this process. Backlog: the events are on the topics before the
    consumers start; the clock starts once every process owns partitions, and what was
    consumed before that (by the first process to join) is left out of the rate. On a
    machine with few cores the live producer takes a share of the CPU the consumers scale
    into; the backlog measures the consumers alone.
    """
    engine = make_engine(db_url)
    upgrade(engine)
    group = f"bench-proc-{uuid.uuid4().hex[:6]}"
    env = topics.env(bootstrap, db_url, group, home)
    env["LAER_LOG_LEVEL"] = "INFO"
    # Pre-encoded records keep JSON out of the producer (long memory runs encode as they go,
    # to keep this process small).
    evs = events(n, seed=5, prefix=f"p{count}")
    records: Iterable[Record] = list(encoded(topics, evs)) if n <= 200_000 \
        else encoded(topics, evs)
    if backlog:
        produce(bootstrap, records)
    procs = [ManagedProcess(f"bench-{group}-{i}", ["consume"], env, home / "logs").start()
             for i in range(count)]
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if _all_own_partitions(procs):
                break
            time.sleep(0.05 if backlog else 0.3)
        else:
            raise RuntimeError("the consumers did not all own partitions within 120 s:\n"
                               + "\n".join(p.tail() for p in procs))
        if not backlog:
            time.sleep(2)
        samples: list[tuple[float, int, int]] = []  # (seconds, events consumed, RSS KB)
        stop_sampling = threading.Event()

        def sampler() -> None:
            every = 1.0 if n <= 200_000 else 5.0
            while not stop_sampling.wait(every):
                samples.append((time.perf_counter() - started, consumed(engine, group),
                                _largest_rss(procs)))

        started = time.perf_counter()
        before = consumed(engine, group) if backlog else 0
        if sample_rss:
            threading.Thread(target=sampler, daemon=True).start()
        producer = None
        if not backlog:
            producer = threading.Thread(target=produce, args=(bootstrap, records))
            producer.start()
        while consumed(engine, group) < n:
            if not all(p.alive() for p in procs):
                raise RuntimeError("a consumer died:\n" + "\n".join(p.tail() for p in procs))
            time.sleep(0.05 if backlog else 0.2)
        elapsed = time.perf_counter() - started
        stop_sampling.set()
        if sample_rss:  # the last figure, also for a run shorter than one sampling period
            samples.append((elapsed, n, _largest_rss(procs)))
        if producer is not None:
            producer.join()
        result: dict[str, Any] = {"processes": count, "events": n - before,
                                  "seconds": round(elapsed, 2),
                                  "rate": round((n - before) / elapsed),
                                  "mode": "backlog" if backlog else "live"}
        if sample_rss and samples:
            result.update(rss_summary(samples))
        return result
    finally:
        for p in procs:
            p.stop()
        engine.dispose()
