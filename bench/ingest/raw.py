"""Measurement 1: kafka-python alone reading the records (no parsing, no commits)."""

from __future__ import annotations

import time
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from bench.stats import median_run
from bench.topics import Topics
from consumers.settings import ConsumerSettings


def measure_raw(bootstrap: str, topics: Topics, n: int, passes: int = 5) -> dict[str, Any]:
    """kafka-python alone: the median of `passes` reads of the N records (a read of 20,000
    records takes a fraction of a second, so a single one swings with the machine)."""
    return median_run([_raw_pass(bootstrap, topics, n) for _ in range(passes)])


def reader_from_start(bootstrap: str, topics: Topics, n: int) -> KafkaConsumer:
    """A group-less consumer assigned every partition of the event topics, at offset 0.

    It polls as many records as `laer consume` does, but at most a tenth of the `n` to read:
    the clock starts after the first poll, so a small run still has something to time.
    """
    records = min(ConsumerSettings().max_poll_records, max(1, n // 10))
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             max_poll_records=records)
    tps = [TopicPartition(t, p) for t in topics.by_family.values()
           for p in consumer.partitions_for_topic(t) or ()]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    return consumer


def _raw_pass(bootstrap: str, topics: Topics, n: int) -> dict[str, Any]:
    consumer = reader_from_start(bootstrap, topics, n)
    got = 0
    while not got:  # the clock starts at the first records: seek, connection, first fetch
        got = sum(len(batch) for batch in consumer.poll(timeout_ms=1000).values())
    started = time.perf_counter()
    timed = 0
    while got + timed < n:
        for batch in consumer.poll(timeout_ms=1000).values():
            timed += len(batch)
    elapsed = time.perf_counter() - started
    consumer.close()
    return {"events": got + timed, "seconds": round(elapsed, 2), "rate": round(timed / elapsed)}
