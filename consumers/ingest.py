"""One poll batch in, one database transaction out: state, signals, outbox and offsets together.

A record that cannot be applied never holds its batch back. When a batch fails for a record's
sake (`consumers.failures`), the record is found: directly when the rules raised for it, by
halving the batch when the failure came later (a write, the commit). The records before it
commit as usual, the record is retried alone a few times and then dead-lettered with reason
`processing_error` (and the exception's class and message), and the rest goes on. Only
infrastructure failures leave `process`, and the caller retries the whole batch: the parts
already committed are skipped by their stored offsets.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from consumers.dlq import DeadLetter, DeadLetterSink
from consumers.failures import DeadLetterUnsent, classify, describe, is_infrastructure
from consumers.parking import drop_unappliable_parked
from consumers.records import LazyOrigin, RawRecord, RecordDecoder
from consumers.rehearsal import rehearse_parked
from consumers.settings import ConsumerSettings
from laer_domain.events import CloudEvent, EventType, InvalidEvent
from laer_domain.policy import Policy
from laer_domain.resequence import batch_order
from laer_domain.service import LifecycleService
from persistence.account_cache import AccountCache
from persistence.batch_repository import BatchRepository, ConcurrentUpdate
from persistence.uow import UnitOfWork

log = logging.getLogger(__name__)

TopicPartition = tuple[str, int]
Item = tuple[RawRecord, CloudEvent | DeadLetter]
PROCESSING_ERROR = "processing_error"


@dataclass
class BatchReport:
    """What one batch did; feeds metrics and logs."""

    applied: int = 0
    duplicates: int = 0
    parked: int = 0
    skipped: int = 0
    signals: int = 0
    conflicts: int = 0  # transactions retried because another writer got there first
    record_failures: int = 0  # attempts that failed for a record's sake (and were split up)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    outcomes_by_type: Counter[tuple[str, str]] = field(default_factory=Counter)
    next_offsets: dict[TopicPartition, int] = field(default_factory=dict)

    def add(self, other: BatchReport) -> None:
        """Count a committed part of the same poll batch in this report."""
        self.applied += other.applied
        self.duplicates += other.duplicates
        self.parked += other.parked
        self.skipped += other.skipped
        self.signals += other.signals
        self.conflicts += other.conflicts
        self.record_failures += other.record_failures
        self.dead_letters += other.dead_letters
        self.outcomes_by_type.update(other.outcomes_by_type)
        for tp, offset in other.next_offsets.items():
            self.next_offsets[tp] = max(self.next_offsets.get(tp, 0), offset)


class RecordFailed(Exception):
    """Handling `record` raised `cause` (a record failure); the transaction is rolled back."""

    def __init__(self, record: RawRecord, cause: BaseException) -> None:
        super().__init__(f"{record.topic}/{record.partition}@{record.offset}: {cause!r}")
        self.record = record
        self.cause = cause


class Ingestor:
    """Validates, applies and persists poll batches; bad records go to the dead-letter sink."""

    def __init__(self, factory: sessionmaker[Session], policy: Policy, group_id: str,
                 topic_families: dict[str, str], limits: ConsumerSettings,
                 dead_letters: DeadLetterSink, clock: Callable[[], datetime]) -> None:
        self._factory = factory
        self._policy = policy
        self._group_id = group_id
        self._decoder = RecordDecoder(topic_families, limits)
        self._dead_letters = dead_letters
        self._clock = clock
        self._attempts = limits.record_attempts
        # committed account states, reused while their row is unchanged (bounded, LRU)
        self.cache = AccountCache(limits.account_cache_size)

    def _decode(self, rec: RawRecord, now: datetime) -> CloudEvent | DeadLetter:
        try:
            return self._decoder(rec, now)
        except InvalidEvent as exc:
            return DeadLetter(rec, exc.reason, exc.message)
        except Exception as exc:  # decoding is pure: the same bytes would fail again
            cls, message = describe(exc)
            return DeadLetter(rec, PROCESSING_ERROR, f"decoding failed: {message}", cls)

    def process(self, records: Sequence[RawRecord]) -> BatchReport:
        """Apply a batch exactly once, isolating records that fail (see the module docstring).

        Raises only infrastructure failures (`consumers.failures`).
        """
        return self.process_items(self.decode(records))

    def decode(self, records: Sequence[RawRecord]) -> list[Item]:
        """Each record with its event, or the dead letter it is (decoding is pure)."""
        now = self._clock()
        return [(rec, self._decode(rec, now)) for rec in records]

    def process_items(self, decoded: Sequence[Item]) -> BatchReport:
        """`process` for records already decoded; each partition's must be in offset order."""
        decoded = list(decoded)
        sent: set[tuple[str, int, int]] = set()
        report = BatchReport()
        parts = [decoded]  # a stack of slices of the batch, taken in offset order
        while parts:
            part = parts.pop()
            try:
                report.add(self._committed(part, sent))
                continue
            except RecordFailed as exc:
                culprit: RawRecord | None = exc.record
                cause = exc.cause
            except Exception as exc:
                if is_infrastructure(exc):
                    raise
                culprit, cause = None, exc
            report.record_failures += 1
            if len(part) == 1:
                report.add(self._alone(part[0], cause, sent))
                continue
            if culprit is None:  # failed somewhere in the write or commit: halve
                half = len(part) // 2
                pieces = [part[:half], part[half:]]
            else:
                at = next(i for i, (rec, _) in enumerate(part) if rec is culprit)
                pieces = [part[:at], part[at:at + 1], part[at + 1:]]
            parts.extend(reversed([p for p in pieces if p]))
        return report

    def skip(self, record: RawRecord, reason: str, message: str) -> BatchReport:
        """Dead-letter a record that cannot even be read, and move its offset past it."""
        return self._committed([(record, DeadLetter(record, reason, message))], set())

    def _alone(self, item: Item, cause: BaseException, sent: set[tuple[str, int, int]]
               ) -> BatchReport:
        """Retry one failing record a few times on its own, then dead-letter it."""
        rec, event = item
        failures = 0
        for attempt in range(1, self._attempts):
            time.sleep(0.01 * attempt)  # a moment for a passing cause; a poison fails again
            outcome = self._try_alone(item, sent)
            if isinstance(outcome, BatchReport):
                outcome.record_failures += failures
                return outcome
            cause, failures = outcome, failures + 1
        if (isinstance(event, CloudEvent) and event.type == EventType.SUBSCRIPTION_STARTED
                and drop_unappliable_parked(self._factory, self._dead_letters, self._policy,
                                            event.account_id, landing=event)):
            # the landing failed on a parked event it applies: that one is a dead letter
            # now, and the account lands without it
            outcome = self._try_alone(item, sent)
            if isinstance(outcome, BatchReport):
                outcome.record_failures += failures
                return outcome
            cause, failures = outcome, failures + 1
        cls, message = describe(cause)
        log.warning("record %s/%d@%d dead-lettered after %d attempts: %s: %s", rec.topic,
                    rec.partition, rec.offset, self._attempts, cls, message)
        report = self._committed([(rec, DeadLetter(rec, PROCESSING_ERROR, message, cls))], sent)
        report.record_failures += failures
        return report

    def _try_alone(self, item: Item, sent: set[tuple[str, int, int]]
                   ) -> BatchReport | BaseException:
        """One transaction for one record: its report, or the record failure it met."""
        try:
            return self._committed([item], sent)
        except RecordFailed as exc:
            return exc.cause
        except Exception as exc:
            if is_infrastructure(exc):
                raise
            return exc

    def _committed(self, part: list[Item], sent: set[tuple[str, int, int]]) -> BatchReport:
        """One transaction for `part`, retried in place when another writer got there first."""
        conflicts = 0

        def count(_state: object) -> None:
            nonlocal conflicts
            conflicts += 1

        retrying = Retrying(
            retry=retry_if_exception(lambda exc: classify(exc) == "conflict"),
            wait=wait_random_exponential(multiplier=0.05, max=2), stop=stop_after_attempt(20),
            before_sleep=count, reraise=True,
        )
        for attempt in retrying:
            with attempt:
                report = self._transaction(part, sent)
        report.conflicts = conflicts
        return report

    def _transaction(self, decoded: list[Item], sent: set[tuple[str, int, int]]) -> BatchReport:
        report = BatchReport()
        with UnitOfWork(self._factory, self._group_id) as uow:
            try:
                stored = uow.offsets.lock((r.topic, r.partition) for r, _ in decoded)
                fresh = [(r, item) for r, item in decoded
                         if r.offset >= stored.get((r.topic, r.partition), -1)]
                report.skipped = len(decoded) - len(fresh)
                # Dead letters are acknowledged by the broker before the offsets covering them
                # commit, so a crash in between can repeat a dead letter but never lose one.
                letters = [item for r, item in fresh if isinstance(item, DeadLetter)
                           and (r.topic, r.partition, r.offset) not in sent]
                if letters:
                    try:
                        self._dead_letters(letters)
                    except Exception as exc:
                        raise DeadLetterUnsent(f"{len(letters)} dead letters: {exc}") from exc
                    sent.update((dl.record.topic, dl.record.partition, dl.record.offset)
                                for dl in letters)
                repo = BatchRepository(uow.session, cache=self.cache)
                repo.prefetch(item for _, item in fresh if not isinstance(item, DeadLetter))
                # the batch's accounts are its own (parsed or taken from the cache): changed
                # in place, not copied (see EventBatch)
                batch = LifecycleService(repo, self._policy).batch(reload=repo.reload)
                # in event-time order: the batch commits whole, and fewer events arrive late
                for rec, item in sorted(fresh, key=lambda pair: batch_order(pair[1])):
                    if isinstance(item, DeadLetter):
                        report.dead_letters.append(item)
                        report.outcomes_by_type[("invalid", item.reason)] += 1
                        continue
                    try:
                        result = batch.handle(item, origin=LazyOrigin(rec))
                        if result.status == "parked":  # it must apply once its account lands
                            rehearse_parked(item, self._policy)
                    except Exception as exc:
                        if is_infrastructure(exc):  # `reload` reads the database
                            raise
                        raise RecordFailed(rec, exc) from exc
                    report.outcomes_by_type[(item.type, result.status)] += 1
                    if result.status in ("applied", "resequenced"):
                        report.applied += 1
                    elif result.status == "duplicate":
                        report.duplicates += 1
                    else:
                        report.parked += 1
                report.signals = repo.write()
                for rec, _ in decoded:
                    tp = (rec.topic, rec.partition)
                    report.next_offsets[tp] = max(report.next_offsets.get(tp, 0), rec.offset + 1)
                uow.offsets.advance_all(report.next_offsets)
                uow.commit()
                self.cache.put(repo.committed_accounts())
            except DBAPIError as exc:
                if classify(exc) == "conflict":
                    raise ConcurrentUpdate(str(exc)) from exc
                raise
        return report
