"""What `laer status` shows: lag, throughput, runs in flight and the dead-letter backlog."""

from __future__ import annotations

import time
from typing import Any

from rich.table import Table
from sqlalchemy import func, select

from dispatch.run_states import IN_FLIGHT
from laer.bootstrap import Container
from persistence.tables import ConsumerOffsetRow, OutboxRow, PlaybookRunRow


def log_ends(c: Container, topics: list[str]) -> dict[tuple[str, int], int]:
    """The end offset of every partition of `topics` (records ever written)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(request_timeout_ms=10000, **c.settings.kafka.client_options())
    try:
        parts = [TopicPartition(t, p) for t in topics
                 for p in sorted(consumer.partitions_for_topic(t) or ())]
        return {(tp.topic, tp.partition): int(o)
                for tp, o in consumer.end_offsets(parts).items()}
    finally:
        consumer.close()


def collect(c: Container, previous: dict[str, Any] | None) -> dict[str, Any]:
    """One snapshot; events per second comes from the change since `previous`."""
    k = c.settings.kafka
    topics = list(k.source_topics)
    try:
        ends = log_ends(c, [*topics, k.dlq_topic])
        broker = "up"
    except Exception as exc:  # show the rest even when the broker is down
        ends, broker = {}, f"unreachable ({type(exc).__name__})"
    with c.sessions() as s:
        stored = {(r.topic, r.partition): r.next_offset for r in s.scalars(
            select(ConsumerOffsetRow).where(ConsumerOffsetRow.group_id == k.group_id))}
        runs = dict(s.execute(select(PlaybookRunRow.state, func.count())
                              .group_by(PlaybookRunRow.state)).tuples().all())
        pending = int(s.scalar(select(func.count()).select_from(OutboxRow)
                               .where(OutboxRow.status == "pending")) or 0)
    lag = {f"{t}[{p}]": max(0, end - stored.get((t, p), 0))
           for (t, p), end in sorted(ends.items()) if t in topics}
    consumed = sum(stored.get(tp, 0) for tp in ends if tp[0] in topics) if ends else sum(
        stored.values())
    now = time.time()
    rate = None
    if previous is not None and now > previous["at"]:
        rate = (consumed - previous["consumed"]) / (now - previous["at"])
    return {
        "at": now, "broker": broker, "consumed": consumed, "events_per_s": rate,
        "lag": lag, "total_lag": sum(lag.values()),
        "dlq_size": sum(o for (t, _), o in ends.items() if t == k.dlq_topic),
        "runs_in_flight": sum(n for st, n in runs.items() if st in IN_FLIGHT),
        "runs_by_state": runs, "signals_waiting": pending,
    }


def render(snap: dict[str, Any]) -> Table:
    """A compact table of one snapshot."""
    table = Table("", "", title="LAER status", show_header=False)
    rate = snap["events_per_s"]
    table.add_row("broker", snap["broker"])
    table.add_row("events consumed", str(snap["consumed"]))
    table.add_row("events / s", "-" if rate is None else f"{rate:.1f}")
    table.add_row("consumer lag", f"{snap['total_lag']}  " + " ".join(
        f"{k}={v}" for k, v in snap["lag"].items() if v))
    table.add_row("dead letters", str(snap["dlq_size"]))
    table.add_row("signals waiting for dispatch", str(snap["signals_waiting"]))
    table.add_row("playbook runs in flight", str(snap["runs_in_flight"]))
    table.add_row("runs by state", ", ".join(f"{k} {v}" for k, v in
                                             sorted(snap["runs_by_state"].items())) or "-")
    return table
