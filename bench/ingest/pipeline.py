"""Measurement 2: the full pipeline (`ConsumerLoop` in this process) over records on the topics."""

from __future__ import annotations

import gc
import threading
import time
import uuid
from typing import Any

from sqlalchemy import Engine

from bench.ingest.rebuilds import timing_rebuilds
from bench.topics import Topics
from consumers.runner import ConsumerLoop
from laer_domain.policy import Policy
from persistence.db import make_engine, upgrade
from persistence.uow import session_factory


def in_process_loop(bootstrap: str, topics: Topics, db_url: str, group_prefix: str
                    ) -> tuple[ConsumerLoop, Engine]:
    """A `ConsumerLoop` of a new group on a migrated database; dead letters are dropped."""
    # The previous phase's loop ends in a reference cycle (its run frame is held by the
    # traceback of a timeout kafka-python keeps in a future), so its account cache and last
    # batch wait for a full collection (about 80,000 objects after a 50,000-event phase):
    # without this one, that collection fell inside the next phase's timings.
    gc.collect()
    engine = make_engine(db_url)
    upgrade(engine)
    group = f"{group_prefix}-{uuid.uuid4().hex[:6]}"
    settings = topics.settings(bootstrap, db_url, group)
    loop = ConsumerLoop(settings.kafka, settings.consumer, session_factory(engine),
                        Policy(), lambda letters: None)
    return loop, engine


def records_in(report: Any) -> int:
    """Every record a batch report accounts for, whatever became of it."""
    return int(report.applied + report.duplicates + report.parked + report.skipped
               + len(report.dead_letters))


def measure_pipeline(bootstrap: str, topics: Topics, n: int, db_url: str) -> dict[str, Any]:
    """ConsumerLoop in this process over the N records already on the topics.

    The topics are read at their own paces, so an account's events can come out of
    event-time order across batches: the account rebuilds are timed too.
    """
    loop, engine = in_process_loop(bootstrap, topics, db_url, "bench")
    done = threading.Event()
    marks: list[tuple[float, int]] = []
    total = 0

    def on_batch(report: Any) -> None:
        nonlocal total
        total += records_in(report)
        marks.append((time.perf_counter(), total))
        if total >= n:
            loop.stop()
            done.set()

    loop.on_batch = on_batch
    thread = threading.Thread(target=loop.run)
    with timing_rebuilds() as rebuilds:
        started = time.perf_counter()
        thread.start()
        done.wait(timeout=3600)
        thread.join(timeout=60)
    engine.dispose()
    first_t, first_n = marks[0]
    last_t, last_n = marks[-1]
    # one batch only (a tiny run): the rate since the start, group join included
    steady = ((last_n - first_n) / (last_t - first_t) if last_t > first_t
              else total / (last_t - started))
    return {"events": total, "seconds": round(last_t - started, 2),
            "rate": round(steady), "batches": len(marks), "rebuilds": rebuilds.summary()}
