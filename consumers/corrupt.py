"""Records the Kafka client cannot read: found, dead-lettered by position, and skipped.

kafka-python raises `CorruptRecordError` from `poll()` for a record it cannot parse (a header
name that is not UTF-8, a failed CRC), without saying which partition it came from, and raises
it again on every poll: without a way past it the partition stops (and an unhandled exception
restarts the process at the same offset, forever). Records before it in the fetch were already
returned, so the unreadable one sits at the current position of one assigned partition. Each
candidate position is read once more by a private probe consumer; the one that fails there is
dead-lettered with reason `corrupt_record` (what can be read of it: its topic, partition and
offset) in the transaction that moves the stored offset past it, and the consumer seeks past.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import CorruptRecordError

from consumers.ingest import BatchReport, Ingestor
from consumers.records import RawRecord
from consumers.settings import KafkaSettings

log = logging.getLogger(__name__)

CORRUPT_RECORD = "corrupt_record"


def unreadable_at(kafka: KafkaSettings, tp: TopicPartition, offset: int,
                  timeout_s: float = 15.0) -> CorruptRecordError | None:
    """The error reading the record at `offset` of `tp` raises, or None if it reads."""
    probe = KafkaConsumer(group_id=None, enable_auto_commit=False, client_id="laer-probe",
                          **kafka.client_options())
    try:
        probe.assign([tp])
        probe.seek(tp, offset)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if probe.poll(timeout_ms=500, max_records=1):
                    return None
            except CorruptRecordError as exc:
                return exc
        return None  # nothing came back in time: not found, the loop will meet it again
    finally:
        probe.close()


def skip_unreadable(consumer: Any, kafka: KafkaSettings, ingestor: Ingestor,
                    error: Exception) -> BatchReport | None:
    """Find the record `error` came from, dead-letter it and seek past it (None: not found)."""
    paused = consumer.paused()
    candidates = sorted((tp for tp in consumer.assignment() if tp not in paused),
                        key=lambda tp: (tp.topic, tp.partition))
    if not candidates:
        return None
    ends = consumer.end_offsets(candidates)
    for tp in candidates:
        position = consumer.position(tp)
        if position is None or position >= ends.get(tp, 0):
            continue
        found = unreadable_at(kafka, tp, position)
        if found is None:
            continue
        record = RawRecord(tp.topic, tp.partition, position, key=None, value=None)
        report = ingestor.skip(record, CORRUPT_RECORD,
                               f"the Kafka client cannot read this record: {found or error}")
        consumer.seek(tp, position + 1)
        log.warning("unreadable record %s/%d@%d dead-lettered and skipped: %s", tp.topic,
                    tp.partition, position, found)
        return report
    return None


def after_failed_poll(consumer: Any, kafka: KafkaSettings, ingestor: Ingestor,
                      exc: Exception) -> BatchReport | None:
    """After `poll()` raised: skip an unreadable record if that was the cause (its report)."""
    if not isinstance(exc, CorruptRecordError):
        log.warning("poll failed (%s); retrying", exc)
        return None
    try:
        report = skip_unreadable(consumer, kafka, ingestor, exc)
    except Exception:
        log.exception("unreadable record not skipped yet; retrying")
        return None
    if report is None:
        log.warning("poll raised %s, but no unreadable record was found; retrying", exc)
    return report
