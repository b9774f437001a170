"""One poll batch in, one database transaction out: state, signals, outbox and offsets together."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.exc import StaleDataError
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from consumers.dlq import DeadLetter, DeadLetterSink
from consumers.records import LazyOrigin, RawRecord, RecordDecoder
from consumers.settings import ConsumerSettings
from laer_domain.events import CloudEvent, InvalidEvent
from laer_domain.policy import Policy
from laer_domain.resequence import batch_order
from laer_domain.service import LifecycleService
from persistence.account_cache import AccountCache
from persistence.batch_repository import BatchRepository, ConcurrentUpdate
from persistence.uow import UnitOfWork

log = logging.getLogger(__name__)

TopicPartition = tuple[str, int]


@dataclass
class BatchReport:
    """What one batch did; feeds metrics and logs."""

    applied: int = 0
    duplicates: int = 0
    parked: int = 0
    skipped: int = 0
    signals: int = 0
    dead_letters: list[DeadLetter] = field(default_factory=list)
    outcomes_by_type: Counter[tuple[str, str]] = field(default_factory=Counter)
    next_offsets: dict[TopicPartition, int] = field(default_factory=dict)


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
        # committed account states, reused while their row is unchanged (bounded, LRU)
        self.cache = AccountCache(limits.account_cache_size)

    def _decode(self, rec: RawRecord, now: datetime) -> CloudEvent | DeadLetter:
        try:
            return self._decoder(rec, now)
        except InvalidEvent as exc:
            return DeadLetter(rec, exc.reason, exc.message)

    def process(self, records: Sequence[RawRecord]) -> BatchReport:
        """Apply a batch exactly once; retried whole when a concurrent writer got there first."""
        now = self._clock()
        decoded = [(rec, self._decode(rec, now)) for rec in records]
        sent: set[tuple[str, int, int]] = set()
        retrying = Retrying(
            retry=retry_if_exception_type((ConcurrentUpdate, IntegrityError, StaleDataError)),
            wait=wait_random_exponential(multiplier=0.05, max=2), stop=stop_after_attempt(20),
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                return self._transaction(decoded, sent)
        raise AssertionError("unreachable")  # pragma: no cover

    def _transaction(self, decoded: list[tuple[RawRecord, CloudEvent | DeadLetter]],
                     sent: set[tuple[str, int, int]]) -> BatchReport:
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
                    self._dead_letters(letters)
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
                    result = batch.handle(item, origin=LazyOrigin(rec))
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
                if _is_conflict(exc):
                    raise ConcurrentUpdate(str(exc)) from exc
                raise
        return report


def _is_conflict(exc: DBAPIError) -> bool:
    """Deadlocks and serialisation failures are retried; anything else is an outage."""
    code = getattr(exc.orig, "sqlstate", None)
    return code in {"40001", "40P01"}
