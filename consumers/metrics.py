"""Prometheus metrics of the consumers."""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from consumers.ingest import BatchReport

log = logging.getLogger(__name__)

EVENTS = Counter("laer_events_total", "Records consumed by event type and outcome",
                 ["type", "outcome"])
DEAD_LETTERS = Counter("laer_dead_letters_total", "Records sent to the dead-letter topic",
                       ["reason"])
SIGNALS = Counter("laer_signals_total", "Signals raised")
RESEQUENCED = Counter("laer_resequenced_events_total",
                      "Late events applied by rebuilding their account in event-time order")
BATCH_SECONDS = Histogram("laer_batch_seconds", "Time to apply and commit one poll batch",
                          buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
RETRIES = Counter(
    "laer_consumer_retries_total",
    "Failed attempts the consumer retried, by cause: database, broker, conflict (another "
    "writer first), record (a record failed and was retried alone or dead-lettered)",
    ["cause"])
LAG = Gauge("laer_consumer_lag", "Records behind the end of the partition",
            ["topic", "partition"])

ASSIGNED = Gauge("laer_consumer_assigned_partitions",
                 "Source-topic partitions this consumer owns now (0 while it rebalances)")
REBALANCES = Counter("laer_consumer_rebalances_total",
                     "Group rebalances this consumer went through, by step: revoked (it gave "
                     "its partitions up to rejoin) and assigned (it rejoined)", ["step"])
REJOINS = Counter("laer_consumer_rejoins_total",
                  "Times this consumer, left without an assignment longer than "
                  "LAER_CONSUMER__REJOIN_AFTER_S, closed its client and joined again")

ALIGN_BUFFERED = Gauge("laer_consumer_align_buffered_records",
                       "Records read and held until the other topics caught up in event time")
ALIGN_FORCED = Counter("laer_consumer_align_forced_total",
                       "Records applied because they were held longer than the alignment "
                       "bound (LAER_CONSUMER__ALIGN_MAX_WAIT_S), not by the watermark")


def serve(port: int) -> None:
    """Expose /metrics on `port`."""
    start_http_server(port)
    log.info("metrics on :%d/metrics", port)


def observe_batch(report: BatchReport, seconds: float) -> None:
    """Count one batch's outcomes."""
    for (event_type, outcome), n in report.outcomes_by_type.items():
        EVENTS.labels(event_type, outcome).inc(n)
        RESEQUENCED.inc(n if outcome == "resequenced" else 0)
    for dl in report.dead_letters:
        DEAD_LETTERS.labels(dl.reason).inc()
    SIGNALS.inc(report.signals)
    if report.conflicts:
        RETRIES.labels("conflict").inc(report.conflicts)
    if report.record_failures:
        RETRIES.labels("record").inc(report.record_failures)
    BATCH_SECONDS.observe(seconds)


def observe_retry(cause: str) -> None:
    """Count one failed attempt the loop will retry (database, broker, conflict, record)."""
    RETRIES.labels(cause).inc()


def observe_lag(consumer: Any) -> None:
    """Update per-partition lag from the consumer's position and the log end."""
    try:
        assigned = list(consumer.assignment())
        if not assigned:
            return
        ends = consumer.end_offsets(assigned)
        for tp in assigned:
            position = consumer.position(tp)
            LAG.labels(tp.topic, str(tp.partition)).set(max(0, ends[tp] - position))
    except Exception as exc:  # metrics must never stop ingestion
        log.debug("lag not measured: %s", exc)


def observe_revoked() -> None:
    """This consumer gave its partitions up for a rebalance."""
    REBALANCES.labels("revoked").inc()
    ASSIGNED.set(0)


def observe_assigned(partitions: int) -> None:
    """This consumer rejoined its group and owns `partitions` partitions."""
    REBALANCES.labels("assigned").inc()
    ASSIGNED.set(partitions)


def observe_rejoin() -> None:
    """This consumer gave up a rebalance that did not end and joins with a new client."""
    REJOINS.inc()


def observe_alignment(buffered: int, forced: int) -> None:
    """Records held for alignment now, and those just applied after the longest wait."""
    ALIGN_BUFFERED.set(buffered)
    if forced:
        ALIGN_FORCED.inc(forced)
