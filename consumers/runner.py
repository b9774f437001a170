"""The consumer loop: poll, ingest a batch in one transaction, commit, repeat until told to stop."""

from __future__ import annotations

import gc
import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.structs import OffsetAndMetadata
from sqlalchemy.orm import Session, sessionmaker

from consumers import metrics
from consumers.align import Aligner, Item, ReadingClock
from consumers.corrupt import after_failed_poll
from consumers.dlq import DeadLetterSink
from consumers.failures import retry_cause
from consumers.ingest import BatchReport, Ingestor
from consumers.parking import ParkedSweeper
from consumers.records import RawRecord
from consumers.settings import ConsumerSettings, KafkaSettings
from laer_domain.policy import Policy
from persistence.uow import UnitOfWork

log = logging.getLogger(__name__)


# The young generation is collected every 10,000 net container allocations instead of 700
# (a few milliseconds each; 50,000 saves little more CPU and pauses ~30 ms).
GC_THRESHOLDS = (10_000, 10, 10)
_gc_tuned = False


def tune_gc() -> None:
    """Fewer and cheaper garbage collections for a long-running consumer process.

    A batch allocates many container objects (events, states, rows) that live until it is
    committed. With CPython's default thresholds they are scanned again and again and
    promoted to the old generation, which then triggers full collections walking the whole
    heap: about a sixth of the consumer's CPU, and pauses of up to ~100 ms in the middle of
    a batch (latency). The objects alive after start-up (modules, schemas, clients) are
    frozen out of those walks, once per process, and young collections run less often.
    Memory is still freed by reference counting as soon as it is unused; only garbage
    cycles wait a little longer (at most one young generation of them).
    """
    global _gc_tuned
    if not _gc_tuned:
        gc.collect()
        gc.freeze()
        _gc_tuned = True
    gc.set_threshold(*GC_THRESHOLDS)


def consumer_options(kafka: KafkaSettings, settings: ConsumerSettings) -> dict[str, Any]:
    """kafka-python options of the ingesting consumer."""
    session = settings.session_timeout_ms
    heartbeat = min(settings.heartbeat_interval_ms, session // 3)
    opts: dict[str, Any] = dict(
        group_id=kafka.group_id, enable_auto_commit=False, auto_offset_reset="earliest",
        max_poll_records=settings.max_poll_records, client_id="laer-consumer",
        session_timeout_ms=session, heartbeat_interval_ms=heartbeat,
        # a topic created just before start-up may be absent from the first metadata (the
        # group then assigns nothing); a short refresh picks it (and new partitions) up
        metadata_max_age_ms=30_000,
        # partition i of every source topic to the same member: alignment (consumers.align)
        # compares the co-partitions of one account's topics, so they must be read together
        partition_assignment_strategy=[RangePartitionAssignor],
        **kafka.client_options(),
    )
    instance = kafka.group_instance_id
    if instance:
        opts["group_instance_id"] = instance
    return opts


class SeekToStoredOffsets(ConsumerRebalanceListener):  # type: ignore[misc]
    """On assignment, continue from the offsets stored with the state, not Kafka's own.

    The listener runs inside `poll()`, where a database outage must not escape: assigned
    partitions are paused here and resumed by the loop once their stored offsets were read
    and sought (`resolve`), so nothing is fetched from a wrong position.
    """

    def __init__(self, consumer_ref: Callable[[], KafkaConsumer],
                 factory: sessionmaker[Session], group_id: str,
                 aligner: Aligner | None = None,
                 held_from: dict[tuple[str, int], int] | None = None) -> None:
        self._consumer_ref = consumer_ref
        self._factory = factory
        self._group_id = group_id
        self._aligner = aligner
        self.pending: set[Any] = set()
        # earliest held offsets of revoked partitions: kafka-python keeps the fetch position
        # of a partition assigned back, which is past what was held and dropped
        self.held_from: dict[tuple[str, int], int] = dict(held_from or {})
        # since when this member owns nothing while waiting for an assignment (it starts so)
        self.unassigned_since: float | None = time.monotonic()

    def unassigned_for(self) -> float:
        """Seconds this member has waited for an assignment (0 while it holds one)."""
        since = self.unassigned_since
        return 0.0 if since is None else time.monotonic() - since

    def on_partitions_revoked(self, revoked: Any) -> None:
        self.pending.difference_update(revoked)
        if self._aligner is not None:  # held records are not committed: the new owner reads them
            self.held_from.update(
                self._aligner.revoke((tp.topic, tp.partition) for tp in revoked))
        self.unassigned_since = time.monotonic()
        metrics.observe_revoked()
        log.info("partitions revoked: %s", sorted((tp.topic, tp.partition) for tp in revoked))

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.unassigned_since = None
        metrics.observe_assigned(len(assigned))
        log.info("partitions assigned: %s", sorted((tp.topic, tp.partition) for tp in assigned))
        if self._aligner is not None:
            self._aligner.assign((tp.topic, tp.partition) for tp in assigned)
        if not assigned:
            return
        consumer = self._consumer_ref()
        consumer.pause(*assigned)
        self.pending.update(assigned)
        try:
            self.resolve()
        except Exception as exc:  # the loop retries with backoff
            log.warning("stored offsets not read yet (%s); partitions stay paused", exc)

    def resolve(self) -> None:
        """Seek pending partitions to their stored offsets and resume them."""
        if not self.pending:
            return
        with UnitOfWork(self._factory, self._group_id) as uow:
            stored = uow.offsets.stored()
        consumer = self._consumer_ref()
        assigned = consumer.assignment()
        ready = [tp for tp in self.pending if tp in assigned]
        for tp in ready:
            # the stored offset never passes a held record; without one (nothing committed
            # yet), reading starts again at the first record held when it was revoked
            nxt = stored.get((tp.topic, tp.partition),
                             self.held_from.get((tp.topic, tp.partition)))
            if nxt is not None:
                consumer.seek(tp, nxt)
        consumer.resume(*ready)
        self.pending.clear()
        self.held_from.clear()


@dataclass
class ConsumerLoop:
    """Runs until `stop()` (or SIGTERM/SIGINT): each batch is applied exactly once."""

    kafka: KafkaSettings
    settings: ConsumerSettings
    factory: sessionmaker[Session]
    policy: Policy
    dead_letters: DeadLetterSink
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    on_batch: Callable[[BatchReport], None] | None = None
    gc_tuning: bool = True  # `tune_gc()` when the loop starts (it affects the whole process)
    _stop: threading.Event = field(default_factory=threading.Event)
    # the aligner's clock: a batch being applied is no silence of the partitions (align.py)
    _reading: ReadingClock = field(default_factory=lambda: ReadingClock(time.monotonic))

    def stop(self, *_: Any) -> None:
        """Ask the loop to finish its current batch and leave the group."""
        self._stop.set()

    def install_signal_handlers(self) -> None:
        """Ctrl-C and SIGTERM finish the batch in hand, commit and leave cleanly."""
        def handler(signum: int, _frame: FrameType | None) -> None:
            log.info("signal %s: finishing the current batch", signum)
            self.stop()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def _consumer(self) -> KafkaConsumer:
        return KafkaConsumer(**consumer_options(self.kafka, self.settings))

    def run(self) -> None:
        """Poll and ingest until stopped."""
        k = self.kafka
        ingestor = Ingestor(self.factory, self.policy, k.group_id, k.source_topics,
                            self.settings, self.dead_letters, self.clock)
        sweeper = ParkedSweeper(self.factory, self.policy, self.settings.park_window,
                                self.dead_letters, self.clock)
        aligner = Aligner(max_wait_s=self.settings.align_max_wait_s,
                          bound=self.settings.align_buffer_records,
                          enabled=self.settings.align, clock=self._reading)
        if self.gc_tuning:
            tune_gc()
        consumer, listener = self._join(aligner, check_topics=True)
        backoff = 0.5
        last_sweep = 0.0
        try:
            while not self._stop.is_set():
                if listener.unassigned_for() > self.settings.rejoin_after_s:
                    consumer, listener = self._rejoin(consumer, listener, aligner)
                    continue
                if listener.pending:
                    try:
                        listener.resolve()
                    except Exception as exc:
                        log.warning("stored offsets unreadable (%s); retrying in %.1fs",
                                    exc, backoff)
                        metrics.observe_retry(retry_cause(exc, "database"))
                        backoff = self._back_off(backoff)
                        self._keep_alive(consumer)
                        continue
                # poll() returns as soon as any record is fetched (up to max_poll_records; the
                # timeout only bounds an idle wait), and the next fetch is in flight while a
                # batch is processed: a batch is what arrived during the previous one, so at a
                # steady rate batches stay small and latency is about one batch's processing.
                _unstick_paused_records(consumer)
                try:
                    polled = consumer.poll(timeout_ms=self.settings.poll_timeout_ms)
                except Exception as exc:  # never out of the loop: that would crash-loop
                    # a record skipped by its position must not pass held ones: apply them
                    held = aligner.release(everything=True).items
                    if held and self._apply(ingestor, consumer, aligner, held) is None:
                        backoff = self._back_off(backoff)
                        continue
                    started = time.perf_counter()
                    report = after_failed_poll(consumer, k, ingestor, exc)
                    if report is None:
                        metrics.observe_retry(retry_cause(exc, "broker"))
                        backoff = self._back_off(backoff)
                    else:
                        metrics.observe_batch(report, time.perf_counter() - started)
                        self._commit_kafka(consumer, report)
                    continue
                records = [RawRecord.from_consumer_record(r)
                           for batch in polled.values() for r in batch]
                if records:
                    aligner.add(ingestor.decode(records))
                if aligner.enabled and aligner.buffered:
                    self._mark_ends(consumer, aligner, listener.pending)
                # at most a poll's worth a batch: the transaction stays the size it was
                released = aligner.release(limit=self.settings.max_poll_records)
                self._flow_control(consumer, aligner)
                metrics.observe_alignment(aligner.buffered, released.forced)
                if released.items:
                    applied = self._apply(ingestor, consumer, aligner, released.items)
                    if applied is None:
                        backoff = self._back_off(backoff)
                        continue
                    backoff = 0.5
                    if applied.parked:
                        last_sweep = 0.0  # a landing may have raced this park: check soon
                if time.monotonic() - last_sweep > 5.0:
                    last_sweep = time.monotonic()
                    try:
                        sweeper.run()
                    except Exception as exc:
                        log.exception("parked-event sweep failed; will retry")
                        metrics.observe_retry(retry_cause(exc, "database"))
                    metrics.observe_lag(consumer)
        finally:
            # held records are simply not committed: the next owner reads them again
            consumer.close()  # leaves the group so partitions move at once
            log.info("consumer stopped")

    def _join(self, aligner: Aligner, check_topics: bool = False,
              held_from: dict[tuple[str, int], int] | None = None,
              ) -> tuple[KafkaConsumer, SeekToStoredOffsets]:
        """A new client subscribed to the source topics (the group assigns it partitions)."""
        topics = list(self.kafka.source_topics)
        consumer = self._consumer()
        if check_topics:
            self._await_topics(consumer, topics)
            if aligner.enabled and not self._co_partitioned(consumer, topics):
                aligner.enabled = False
        listener = SeekToStoredOffsets(lambda: consumer, self.factory, self.kafka.group_id,
                                       aligner, held_from)
        consumer.subscribe(topics=topics, listener=listener)
        return consumer, listener

    def _rejoin(self, consumer: KafkaConsumer, listener: SeekToStoredOffsets,
                aligner: Aligner) -> tuple[KafkaConsumer, SeekToStoredOffsets]:
        """Give up a rebalance that did not end: close the client and join with a new one.

        Seen once on kafka-python 3.0.12: a member, revoked for a rebalance, never got its
        assignment and polled on idle while the group evicted it and went on without it.
        Nothing is lost: held records were dropped at the revoke (the next owner, maybe this
        one, reads them again from the stored offsets) and nothing uncommitted is kept.
        """
        log.warning("no partitions assigned for %.0f s (LAER_CONSUMER__REJOIN_AFTER_S=%g): "
                    "joining the group again with a new client",
                    listener.unassigned_for(), self.settings.rejoin_after_s)
        metrics.observe_rejoin()
        # (a revoke dropped what was held already; this covers partitions never revoked)
        held_from = {**listener.held_from, **aligner.revoke(aligner.assigned())}
        try:
            consumer.close(timeout_ms=5000)
        except Exception as exc:  # a client that hung is dropped whatever its state
            log.warning("closing the stuck client failed: %s", exc)
        return self._join(aligner, held_from=held_from)

    def _apply(self, ingestor: Ingestor, consumer: KafkaConsumer, aligner: Aligner,
               items: list[Item]) -> BatchReport | None:
        """Ingest released records and commit: the report, or None (they are held again)."""
        started = time.perf_counter()
        try:
            with self._reading.busy():
                report = ingestor.process_items(items)
        except Exception as exc:
            # Database or broker down, or a conflict that outlasted its retries: hold the
            # records again and retry later; nothing is committed (the parts that were are
            # skipped by their stored offsets).
            log.exception("batch failed; retrying")
            metrics.observe_retry(retry_cause(exc, "database"))
            aligner.restore(items)
            return None
        metrics.observe_batch(report, time.perf_counter() - started)
        self._commit_kafka(consumer, report)
        if self.on_batch:
            self.on_batch(report)
        return report

    @staticmethod
    def _mark_ends(consumer: KafkaConsumer, aligner: Aligner, pending: set[Any]) -> None:
        """Tell the aligner which partitions are read to their end (they hold nothing back)."""
        for tp in consumer.assignment():
            at_end = False
            if tp not in pending:  # not sought to its stored offset yet: unknown
                try:
                    highwater = consumer.highwater(tp)  # from the last fetch response
                    position = (consumer.position(tp, timeout_ms=0)
                                if highwater is not None else None)
                    at_end = position is not None and position >= highwater
                except Exception as exc:  # revoked meanwhile: it is dropped anyway
                    log.debug("end of %s not known: %s", tp, exc)
            aligner.set_at_end((tp.topic, tp.partition), at_end)

    @staticmethod
    def _flow_control(consumer: KafkaConsumer, aligner: Aligner) -> None:
        """Pause partitions the aligner holds too much of; resume them once half drained."""
        pause, resume = aligner.pause_changes()
        assigned = consumer.assignment()
        if pause:
            consumer.pause(*(t for t in (TopicPartition(*tp) for tp in pause) if t in assigned))
        if resume:
            consumer.resume(*(t for t in (TopicPartition(*tp) for tp in resume)
                              if t in assigned))

    @staticmethod
    def _co_partitioned(consumer: KafkaConsumer, topics: list[str]) -> bool:
        """Whether the source topics have one partition count (alignment needs it)."""
        counts = {t: len(consumer.partitions_for_topic(t) or ()) for t in topics}
        if len(set(counts.values())) == 1:
            return True
        log.error("source topics are not co-partitioned (%s): event-time alignment is off; "
                  "late events are re-sequenced instead", counts)
        return False

    def _keep_alive(self, consumer: KafkaConsumer) -> None:
        """Poll to stay in the group while waiting; records it returns are read again later."""
        try:
            polled = consumer.poll(timeout_ms=0)
        except Exception as exc:  # a corrupt record is met again once the offsets are read
            log.debug("poll while waiting: %s", exc)
            return
        records = [RawRecord.from_consumer_record(r) for batch in polled.values() for r in batch]
        if records:  # from partitions not waiting for their offsets: not dropped
            self._rewind(consumer, records)

    def _back_off(self, seconds: float) -> float:
        """Wait (unless stopped meanwhile); returns the next wait: twice as long, 10 s at most."""
        self._stop.wait(seconds)
        return min(seconds * 2, 10.0)

    def _await_topics(self, consumer: KafkaConsumer, topics: list[str],
                      timeout: float = 30.0) -> None:
        """Join only once the topics' partitions are in the metadata: a member that joins
        without them is assigned nothing and may stay idle until the next rebalance."""
        deadline = time.monotonic() + timeout
        missing = topics
        while not self._stop.is_set():
            missing = [t for t in topics if not consumer.partitions_for_topic(t)]
            if not missing or time.monotonic() > deadline:
                break
            self._stop.wait(0.5)
        if missing:
            log.warning("topics without partition metadata (do they exist?): %s", missing)

    @staticmethod
    def _rewind(consumer: KafkaConsumer, records: list[RawRecord]) -> None:
        first: dict[tuple[str, int], int] = {}
        for r in records:
            tp = (r.topic, r.partition)
            first[tp] = min(first.get(tp, r.offset), r.offset)
        assigned = consumer.assignment()
        for (topic, partition), offset in first.items():
            tp = TopicPartition(topic, partition)
            if tp in assigned:
                consumer.seek(tp, offset)

    @staticmethod
    def _commit_kafka(consumer: KafkaConsumer, report: BatchReport) -> None:
        # The database holds the authoritative offsets; Kafka's copy serves lag tools, so it
        # is sent without waiting for the broker's answer (a round trip per batch otherwise).
        offsets = {TopicPartition(t, p): OffsetAndMetadata(o, "", -1)
                   for (t, p), o in report.next_offsets.items()}

        def done(_offsets: Any, response: Any) -> None:
            if isinstance(response, Exception):  # a rebalance in progress: the database
                log.warning("kafka offset commit skipped: %s", response)  # copy still holds

        try:
            consumer.commit_async(offsets, callback=done)
        except Exception as exc:
            log.warning("kafka offset commit skipped: %s", exc)


def _unstick_paused_records(consumer: KafkaConsumer) -> None:
    """Work around kafka-python 3.0.12 losing a resumed partition's parked records.

    Records fetched for a partition paused mid-drain are parked, and handed back after its
    resume only by a poll that starts with the fetcher's in-line slot None; but a drained
    slot stays set (falsy), so the parked records were never returned and the partition,
    having parked data, was never fetched again: it stalled for good (seen on a backlog with
    alignment pausing partitions). Clearing a drained slot before each poll hands them back.
    """
    fetcher = getattr(consumer, "_fetcher", None)
    current = getattr(fetcher, "_next_partition_records", None)
    if current is not None and not current:
        fetcher._next_partition_records = None  # type: ignore[union-attr]
