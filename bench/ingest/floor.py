"""Measurement 1b: the least a durable exactly-once consumer does, with no domain at all."""

from __future__ import annotations

import json
import time
from typing import Any

from bench.ingest.raw import reader_from_start
from bench.stats import median_run
from bench.topics import Topics


def measure_floor(bootstrap: str, topics: Topics, n: int, db_url: str,
                  passes: int = 3) -> dict[str, Any]:
    """The median of `passes` runs of `_floor_pass`."""
    return median_run([_floor_pass(bootstrap, topics, n, db_url) for _ in range(passes)])


def _floor_pass(bootstrap: str, topics: Topics, n: int, db_url: str) -> dict[str, Any]:
    """The least a durable exactly-once consumer does, with no domain at all.

    kafka-python polls as in `measure_raw`; each record's JSON is parsed and its (source, id)
    written to a dedup ledger with one COPY per poll, next to an upsert of the partitions'
    offsets, in one PostgreSQL transaction per poll. What the full pipeline adds to this is
    validation, the lifecycle rules and the account state: the floor shows how much of the
    gap to raw consumption is Kafka plus PostgreSQL, and how much is the domain.
    """
    import psycopg

    conn = psycopg.connect(db_url.replace("postgresql+psycopg://", "postgresql://"))
    conn.execute("DROP TABLE IF EXISTS bench_floor_ledger, bench_floor_offsets")
    conn.execute("CREATE TABLE bench_floor_ledger "
                 "(source text, event_id text, PRIMARY KEY (source, event_id))")
    conn.execute("CREATE TABLE bench_floor_offsets (tp text PRIMARY KEY, next_offset bigint)")
    conn.commit()
    consumer = reader_from_start(bootstrap, topics, n)
    got = 0
    started: float | None = None
    untimed = 0
    try:
        while got < n:
            rows: list[tuple[str, str]] = []
            offsets: dict[str, int] = {}
            for tp, batch in consumer.poll(timeout_ms=1000).items():
                for r in batch:
                    headers = dict(r.headers or ())
                    if "ce_id" in headers:
                        json.loads(r.value)
                        rows.append((headers["ce_source"].decode(), headers["ce_id"].decode()))
                    else:
                        body = json.loads(r.value)
                        rows.append((body["source"], body["id"]))
                    offsets[f"{tp.topic}:{tp.partition}"] = r.offset + 1
                got += len(batch)
            if rows:
                with conn.cursor() as cur:
                    with cur.copy("COPY bench_floor_ledger (source, event_id) FROM STDIN") as cp:
                        for row in rows:
                            cp.write_row(row)
                    cur.executemany(
                        "INSERT INTO bench_floor_offsets VALUES (%s, %s) ON CONFLICT (tp) "
                        "DO UPDATE SET next_offset = excluded.next_offset", list(offsets.items()))
                conn.commit()
                if started is None:  # the clock starts after the first poll, as in `_raw_pass`
                    started, untimed = time.perf_counter(), got
        assert started is not None
        elapsed = time.perf_counter() - started
    finally:
        consumer.close()
        conn.close()
    return {"events": got, "seconds": round(elapsed, 2),
            "rate": round((got - untimed) / elapsed)}
