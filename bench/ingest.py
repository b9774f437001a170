"""Ingestion benchmark: `python -m bench.ingest [--events N] [--long N] [--bootstrap HOST:PORT]`.

In one run, on one broker (its own LocalKafka on a free port unless --bootstrap is given):

1. raw kafka-python consumption of N records (no parsing, no commits);
2. the full pipeline (decode, validate, apply, persist with offsets; `ConsumerLoop` in this
   process) on SQLite and on PostgreSQL;
3. produce -> committed latency at a fixed rate (default 1,000 events/s; p50, p99), the
   producer being a separate process;
4. one vs two `laer consume` processes in one group (PostgreSQL), over a backlog
   (`--scale-mode live`: events produced meanwhile);
5. the RSS of a `laer consume` process over a long run (`--long`, default 30,000 events).

Prints a table and writes bench/results/ingest.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import random
import shutil
import socket
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, func, select, text

from consumers.runner import ConsumerLoop
from laer.local.kafka import LocalKafka
from laer.local.processes import ManagedProcess
from laer.publish import encode
from laer.settings import ConsumerSettings, KafkaSettings, Settings
from laer_domain.events import event_family, make_event
from laer_domain.policy import Policy
from persistence.db import make_engine, upgrade
from persistence.tables import ConsumerOffsetRow
from persistence.uow import session_factory

PG_DEFAULT = "postgresql+psycopg://laer:laer@127.0.0.1:5432/laer_bench"
T0 = datetime(2026, 2, 2, 9, 0, tzinfo=UTC)
console = Console()


# --- workload -------------------------------------------------------------------------------


def events(n: int, seed: int = 1, per_account: int = 20, prefix: str = "b"
           ) -> Iterator[dict[str, Any]]:
    """n valid events: each account lands first, then a mix of usage, support and billing."""
    rnd = random.Random(seed)
    accounts = max(1, n // per_account)
    sent = 0
    for a in range(accounts):
        if sent >= n:
            return
        acc = f"{prefix}-{a:07d}"
        yield make_event("laer.billing.subscription_started", acc, T0, {
            "plan": "team", "seats": 20, "mrr": "1500.00", "currency": "EUR",
            "term_start": "2026-02-02", "term_end": "2027-02-02"},
            id=f"{acc}-0", source="billing")
        sent += 1
    i = 0
    while sent < n:
        acc = f"{prefix}-{rnd.randrange(accounts):07d}"
        at = T0 + timedelta(minutes=i)
        i += 1
        kind = rnd.random()
        if kind < 0.45:
            ev = make_event("laer.usage.active_users", acc, at,
                            {"date": at.date().isoformat(), "count": rnd.randint(0, 20)},
                            id=f"{acc}-u{i}", source="product")
        elif kind < 0.8:
            ev = make_event("laer.usage.feature_used", acc, at,
                            {"feature": rnd.choice(["api", "sso", "reports"]),
                             "count": rnd.randint(1, 50)}, id=f"{acc}-f{i}", source="product")
        elif kind < 0.92:
            ev = make_event("laer.support.ticket_opened", acc, at,
                            {"ticket_id": f"t{i}", "priority": "normal"},
                            id=f"{acc}-t{i}", source="helpdesk")
        else:
            ev = make_event("laer.billing.invoice_paid", acc, at,
                            {"invoice_id": f"i{i}", "amount": 1500, "currency": "EUR"},
                            id=f"{acc}-i{i}", source="billing")
        yield ev
        sent += 1


@dataclass
class Topics:
    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:6])

    @property
    def by_family(self) -> dict[str, str]:
        return {f: f"bench.{f}.{self.suffix}" for f in ("billing", "usage", "support")}

    @property
    def dlq(self) -> str:
        return f"bench.dlq.{self.suffix}"

    def settings(self, bootstrap: str, db_url: str, group: str) -> Settings:
        t = self.by_family
        return Settings(database_url=db_url, kafka=KafkaSettings(
            bootstrap_servers=bootstrap, billing_topic=t["billing"], usage_topic=t["usage"],
            support_topic=t["support"], dlq_topic=self.dlq, group_id=group),
            consumer=ConsumerSettings(poll_timeout_ms=100))

    def env(self, bootstrap: str, db_url: str, group: str, home: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LAER_")}
        t = self.by_family
        env.update({
            "LAER_DATABASE_URL": db_url, "LAER_STATE_DIR": str(home / "state"),
            "LAER_KAFKA__BOOTSTRAP_SERVERS": bootstrap, "LAER_KAFKA__BILLING_TOPIC": t["billing"],
            "LAER_KAFKA__USAGE_TOPIC": t["usage"], "LAER_KAFKA__SUPPORT_TOPIC": t["support"],
            "LAER_KAFKA__DLQ_TOPIC": self.dlq, "LAER_KAFKA__GROUP_ID": group,
            "LAER_CONSUMER__POLL_TIMEOUT_MS": "100", "LAER_LOG_LEVEL": "WARNING",
            "PYTHONPATH": os.getcwd(),
        })
        return env


def create_topics(bootstrap: str, topics: list[str], partitions: int) -> None:
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    try:
        admin.create_topics([NewTopic(name=t, num_partitions=partitions, replication_factor=1)
                             for t in topics])
    finally:
        admin.close()
    probe = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(
                len(probe.partitions_for_topic(t) or ()) == partitions for t in topics):
            time.sleep(0.2)
    finally:
        probe.close()


Record = tuple[str, bytes, bytes, list[tuple[str, bytes]]]


def encoded(topics: Topics, evs: Iterable[dict[str, Any]]) -> Iterator[Record]:
    """(topic, key, value, headers) of each event: binary mode for one in five."""
    fam = topics.by_family
    for n, ev in enumerate(evs, 1):
        key, value, headers = encode(ev, "binary" if n % 5 == 0 else "structured")
        yield fam[event_family(ev["type"])], key, value, headers


def produce(bootstrap: str, records: Iterable[Record], rate: float | None = None,
            sent_at: dict[tuple[str, int, int], float] | None = None,
            warm_topics: Iterable[str] = ()) -> int:
    """Send `encoded` records; at `rate` per second if given.

    Paced sends wait for every replica (acks=all) and linger 2 ms, as a live source would.
    Bulk loads (no rate) take the fast path: acks=1 and large, lingering batches.
    `warm_topics` are looked up before the first send (metadata and the broker connection),
    so a paced run does not stamp the producer's own start-up onto its first records.
    """
    if rate:
        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2,
                                 batch_size=256 * 1024)
    else:
        producer = KafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=50,
                                 batch_size=512 * 1024)
    for topic in warm_topics:
        producer.partitions_for(topic)
    n = 0
    started = time.perf_counter()
    try:
        for n, (topic, key, value, headers) in enumerate(records, 1):
            if rate:
                ahead = started + n / rate - time.perf_counter()
                if ahead > 0:
                    time.sleep(ahead)
            at = time.monotonic()
            fut = producer.send(topic, key=key, value=value, headers=headers)
            if sent_at is not None:
                fut.add_callback(lambda md, at=at: sent_at.__setitem__(
                    (md.topic, md.partition, md.offset), at))
        producer.flush()
    finally:
        producer.close()
    return n


# --- measurements ---------------------------------------------------------------------------


def measure_raw(bootstrap: str, topics: Topics, n: int, passes: int = 5) -> dict[str, Any]:
    """kafka-python alone: the median of `passes` reads of the N records (a read of 20,000
    records takes a fraction of a second, so a single one swings with the machine)."""
    runs = [_raw_pass(bootstrap, topics, n) for _ in range(passes)]
    return _median_run(runs)


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median rate of several runs (the mean of the middle two if even), with every run."""
    rates = [r["rate"] for r in runs]
    first = runs[0]
    summary = {k: v for k, v in first.items() if k not in ("rate", "seconds", "events")}
    return {**summary, "events": max(r["events"] for r in runs),
            "rate": round(statistics.median(rates)), "passes": len(runs), "rates": rates,
            "runs": runs}


def _reader_from_start(bootstrap: str, topics: Topics, n: int) -> KafkaConsumer:
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
    consumer = _reader_from_start(bootstrap, topics, n)
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


def measure_floor(bootstrap: str, topics: Topics, n: int, db_url: str,
                  passes: int = 3) -> dict[str, Any]:
    """The median of `passes` runs of `_floor_pass`."""
    return _median_run([_floor_pass(bootstrap, topics, n, db_url) for _ in range(passes)])


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
    consumer = _reader_from_start(bootstrap, topics, n)
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


def reset(db_url: str, home: Path) -> str:
    if db_url.startswith("postgresql"):
        engine = create_engine(db_url)
        with engine.begin() as conn:
            conn.execute(text("drop schema public cascade"))
            conn.execute(text("create schema public"))
        engine.dispose()
        return db_url
    path = home / f"bench-{uuid.uuid4().hex[:6]}.db"
    return f"sqlite:///{path}"


def consumed(engine: Any, group: str) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(select(func.coalesce(func.sum(ConsumerOffsetRow.next_offset), 0))
                               .where(ConsumerOffsetRow.group_id == group)) or 0)


def measure_pipeline(bootstrap: str, topics: Topics, n: int, db_url: str) -> dict[str, Any]:
    """ConsumerLoop in this process over the N records already on the topics."""
    engine = make_engine(db_url)
    upgrade(engine)
    group = f"bench-{uuid.uuid4().hex[:6]}"
    settings = topics.settings(bootstrap, db_url, group)
    loop = ConsumerLoop(settings.kafka, settings.consumer, session_factory(engine),
                        Policy(), lambda letters: None)
    done = threading.Event()
    marks: list[tuple[float, int]] = []
    total = 0

    def on_batch(report: Any) -> None:
        nonlocal total
        total += len_of(report)
        marks.append((time.perf_counter(), total))
        if total >= n:
            loop.stop()
            done.set()

    def len_of(report: Any) -> int:
        return int(report.applied + report.duplicates + report.parked + report.skipped
                + len(report.dead_letters))

    loop.on_batch = on_batch
    thread = threading.Thread(target=loop.run)
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
            "rate": round(steady), "batches": len(marks)}


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


def measure_latency(bootstrap: str, topics: Topics, db_url: str, rate: float,
                    seconds: float, warmup: float = 2.0) -> dict[str, Any]:
    """Produce at `rate`; latency = commit of the batch that covers a record - its send.

    Reported over every record, and again without the records sent in the first `warmup`
    seconds (a consumer that has just joined parses its first accounts and warms its caches
    and connections: that start-up tail is real, but once per process, not per second).

    The producer is a process of its own, as a real source is: in this process its thread
    would compete with the consumer for the interpreter lock. Both sides stamp with
    `time.monotonic()` (CLOCK_MONOTONIC, one clock for every process of the machine).
    """
    engine = make_engine(db_url)
    upgrade(engine)
    group = f"bench-lat-{uuid.uuid4().hex[:6]}"
    settings = topics.settings(bootstrap, db_url, group)
    loop = ConsumerLoop(settings.kafka, settings.consumer, session_factory(engine),
                        Policy(), lambda letters: None)
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
    thread.start()
    try:  # joined and idle (the topics of this phase are empty)
        if not assigned.done.wait(60):
            raise RuntimeError("the consumer was never assigned partitions")
    finally:
        assigned.close()
    time.sleep(0.5)
    n = int(rate * seconds)
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
    return {"events": len(lat), "rate": rate, "p50_ms": round(_pct(lat, 0.5) * 1000, 1),
            "p99_ms": round(_pct(lat, 0.99) * 1000, 1),
            "max_ms": round(lat[-1] * 1000, 1), "mean_ms": round(statistics.mean(lat) * 1000, 1),
            "warmup_s": warmup, "steady_events": len(steady),
            "steady_p50_ms": round(_pct(steady, 0.5) * 1000, 1) if steady else None,
            "steady_p99_ms": round(_pct(steady, 0.99) * 1000, 1) if steady else None,
            # where the tail comes from: p99 of the records sent in each second of the run
            "p99_ms_by_second": [round(_pct(sorted(v), 0.99) * 1000, 1)
                                 for _, v in sorted(by_second.items())]}


def _pct(ordered: list[float], q: float) -> float:
    return ordered[max(0, int(len(ordered) * q) - 1)]


def rss_kb(pid: int) -> int:
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
            logs = [p.log_path.read_text() if p.log_path.exists() else "" for p in procs]
            if all("partitions assigned: [(" in log for log in logs) and \
                    all(log.rfind("partitions assigned: [(") > log.rfind("revoked: [(")
                        for log in logs):
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
                                max(rss_kb(p.process.pid) for p in procs if p.process)))

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
            samples.append((elapsed, n, max(rss_kb(p.process.pid) for p in procs if p.process)))
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


# --- main -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=50_000, help="N for raw and pipeline runs")
    ap.add_argument("--rate", type=float, default=1000.0, help="events/s of the latency run")
    ap.add_argument("--latency-seconds", type=float, default=15.0)
    ap.add_argument("--scale-events", type=int, default=60_000,
                    help="events of the one-vs-two process runs")
    ap.add_argument("--scale-rounds", type=lambda v: max(1, int(v)), default=2,
                    help="measurements of each of one and two processes (medians reported)")
    ap.add_argument("--scale-mode", choices=("backlog", "live"), default="backlog",
                    help="one-vs-two runs: consume a backlog produced beforehand, or events "
                         "produced meanwhile by this process (which takes CPU from them)")
    ap.add_argument("--long", type=int, default=30_000, help="events of the memory run")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--postgres", default=os.environ.get("LAER_BENCH_POSTGRES_URL", PG_DEFAULT))
    ap.add_argument("--bootstrap", help="use this broker instead of starting one")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "ingest.json")
    args = ap.parse_args()

    home = Path(tempfile.mkdtemp(prefix="laer-bench-"))
    broker: LocalKafka | None = None
    if args.bootstrap:
        bootstrap = args.bootstrap
    else:
        # A new group's first assignment waits 8 s for more members (Kafka's default is 3 s;
        # the local broker's 0 suits tests): two `laer consume` processes started together
        # on 2 busy cores can join more than 3 s apart, and the first then consumed a quarter
        # of the backlog alone. With 8 s the one-vs-two runs start with both in the group.
        broker = LocalKafka(home / "kafka", port=free_port(),
                            overrides={"group.initial.rebalance.delay.ms": "8000"})
        console.print(f"starting a broker on :{broker.port} ...")
        broker.start()
        bootstrap = broker.bootstrap
    results: dict[str, Any] = {"started_at": datetime.now(UTC).isoformat(),
                               "cpus": os.cpu_count(), "args": {
                                   k: str(v) for k, v in vars(args).items()}}
    try:
        def fresh_topics() -> Topics:
            t = Topics()
            create_topics(bootstrap, [*t.by_family.values(), t.dlq], args.partitions)
            return t

        main_topics = fresh_topics()
        console.print(f"producing {args.events} events ...")
        t0 = time.perf_counter()
        produce(bootstrap, encoded(main_topics, events(args.events)))
        results["produce"] = {"events": args.events,
                              "rate": round(args.events / (time.perf_counter() - t0))}
        console.print("1. raw kafka-python consumption ...")
        results["raw"] = measure_raw(bootstrap, main_topics, args.events)
        console.print("1b. floor: poll, parse, dedup ledger and offsets (PostgreSQL) ...")
        results["floor_postgresql"] = measure_floor(
            bootstrap, main_topics, args.events, reset(args.postgres, home))
        console.print("2. full pipeline on SQLite ...")
        results["pipeline_sqlite"] = measure_pipeline(
            bootstrap, main_topics, args.events, reset("sqlite", home))
        console.print("2. full pipeline on PostgreSQL ...")
        results["pipeline_postgresql"] = measure_pipeline(
            bootstrap, main_topics, args.events, reset(args.postgres, home))
        console.print(f"3. latency at {args.rate:.0f} events/s (PostgreSQL) ...")
        results["latency_postgresql"] = measure_latency(
            bootstrap, fresh_topics(), reset(args.postgres, home), args.rate,
            args.latency_seconds)
        console.print("4. one vs two consumer processes (PostgreSQL) ...")
        backlog = args.scale_mode == "backlog"
        # rounds in the order 1, 2, 2, 1, ...: a slow spell of the machine hits both sides
        runs: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
        for i in range(args.scale_rounds):
            for count in ((1, 2) if i % 2 == 0 else (2, 1)):
                runs[count].append(measure_processes(
                    bootstrap, fresh_topics(), reset(args.postgres, home), args.scale_events,
                    count, home, backlog=backlog))
        results["one_process"] = _median_run(runs[1])
        results["two_processes"] = _median_run(runs[2])
        results["scale_ratio_by_round"] = [round(two["rate"] / one["rate"], 2) if one["rate"]
                                           else None for one, two in zip(runs[1], runs[2],
                                                                         strict=True)]
        console.print(f"5. memory over {args.long} events (one process, PostgreSQL) ...")
        results["long_run"] = measure_processes(
            bootstrap, fresh_topics(), reset(args.postgres, home), args.long, 1, home,
            sample_rss=True)
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(home, ignore_errors=True)
    report(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"written to {args.out}")


def report(r: dict[str, Any]) -> None:
    raw = r["raw"]["rate"]
    table = Table("measurement", "events", "result", "vs target", title="LAER ingestion")
    table.add_row("produce (kafka-python, acks=1)", str(r["produce"]["events"]),
                  f"{r['produce']['rate']:,} ev/s", "")
    table.add_row(f"1. raw consume (no parse, no commit; median of {r['raw'].get('passes', 1)})",
                  str(r["raw"]["events"]), f"{raw:,} ev/s",
                  "reads: " + ", ".join(f"{x:,}" for x in r["raw"].get("rates", [raw])))
    floor = r.get("floor_postgresql")
    if floor:
        table.add_row(f"1b. floor: poll, parse, dedup ledger + offsets, postgresql "
                      f"(median of {floor.get('passes', 1)})",
                      str(floor["events"]), f"{floor['rate']:,} ev/s",
                      f"{floor['rate'] / raw:.2f}x raw (no domain)")
    for db in ("sqlite", "postgresql"):
        p = r[f"pipeline_{db}"]
        target = " (target >= 0.5x)" if db == "postgresql" else ""
        table.add_row(f"2. full pipeline, {db}", str(p["events"]), f"{p['rate']:,} ev/s",
                      f"{p['rate'] / raw:.2f}x raw{target}")
    lat = r["latency_postgresql"]
    table.add_row(f"3. produce->committed @ {lat.get('rate', 0):.0f} ev/s, postgresql",
                  str(lat.get("events")), f"p50 {lat.get('p50_ms')} ms, p99 {lat.get('p99_ms')} ms",
                  "p99 target < 250 ms")
    if lat.get("steady_p99_ms") is not None:
        table.add_row(f"3. the same without the first {lat['warmup_s']:g} s (warm-up)",
                      str(lat["steady_events"]),
                      f"p50 {lat['steady_p50_ms']} ms, p99 {lat['steady_p99_ms']} ms", "")
    one, two = r["one_process"], r["two_processes"]
    mode = one.get("mode", "live")
    rounds = f"median of {one.get('passes', 1)}"
    table.add_row(f"4. one `laer consume`, postgresql ({mode}, {rounds})", str(one["events"]),
                  f"{one['rate']:,} ev/s",
                  "runs: " + ", ".join(f"{x:,}" for x in one.get("rates", [one["rate"]])))
    ratio = f"{two['rate'] / one['rate']:.2f}x" if one["rate"] else "n/a"
    by_round = ", ".join(f"{x}x" for x in r.get("scale_ratio_by_round", []) if x)
    table.add_row(f"4. two `laer consume`, postgresql ({mode}, {rounds})", str(two["events"]),
                  f"{two['rate']:,} ev/s", f"{ratio} one (target 1.6x; by round: {by_round}); "
                  "runs: " + ", ".join(f"{x:,}" for x in two.get("rates", [two["rate"]])))
    long = r["long_run"]
    rss = ", ".join(f"{k.removeprefix('at_').replace('_events', '')}: {v} MB"
                    for k, v in long.get("rss_mb", {}).items())
    verdict = "flat" if long.get("rss_flat") else "grew"
    table.add_row("5. RSS of one `laer consume` (at n consumed)", str(long["events"]),
                  f"first {long.get('rss_first_mb')}, last {long.get('rss_last_mb')}, "
                  f"peak {long.get('rss_peak_mb')} MB ({rss}); {long['rate']:,} ev/s",
                  f"{verdict}: {long.get('rss_growth_mb', 0):+} MB, last quarter vs second "
                  "(target flat)")
    console.print(table)


if __name__ == "__main__":
    main()
