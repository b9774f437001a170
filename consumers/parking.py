"""Parked events: applied when a concurrent landing raced them, dead-lettered when unclaimed.

An expired event leaves the dedup ledger with its parked row: it was marked processed when it
was parked, and it was never applied, so `laer dlq replay` or a genuine redelivery applies it.
Expiry takes bounded chunks of rows, `FOR UPDATE SKIP LOCKED` on PostgreSQL, so consumers
sweeping at the same time never dead-letter the same row (SQLite transactions take the write
lock up front: sweeps there run one after the other).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, delete, exists, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from consumers.dlq import DeadLetter, DeadLetterSink
from consumers.failures import DeadLetterUnsent, describe, is_infrastructure
from consumers.records import RawRecord
from consumers.rehearsal import failing_parked
from laer_domain.events import CloudEvent
from laer_domain.policy import Policy
from laer_domain.service import LifecycleService
from persistence import batch_reads
from persistence.tables import AccountRow, ParkedEventRow, ProcessedEventRow
from persistence.uow import UnitOfWork

log = logging.getLogger(__name__)

EXPIRY_CHUNK = 200  # rows per expiry transaction
EXPIRY_CHUNKS_PER_RUN = 10  # a run between two batches stops after this many


def _record_from_origin(origin: dict[str, object] | None, account_id: str) -> RawRecord:
    origin = origin or {}
    headers = origin.get("headers") or []
    key = origin.get("key")
    return RawRecord(
        topic=str(origin.get("topic", "")), partition=int(str(origin.get("partition", -1))),
        offset=int(str(origin.get("offset", -1))),
        key=str(key).encode() if key is not None else account_id.encode(),
        value=str(origin.get("value", "")).encode(),
        headers=tuple((str(k), str(v).encode()) for k, v in headers),  # type: ignore[attr-defined]
    )


def drain_parked(uow: UnitOfWork, account_id: str, policy: Policy) -> int:
    """Apply an existing account's parked events in event-time order, as a landing would.

    The account row is read (and, on PostgreSQL, locked) before the parked events are taken,
    so a concurrent consumer serialises with us.
    """
    return len(LifecycleService(uow.accounts, policy).apply_parked(account_id))


class ParkedSweeper:
    """Runs between batches in every consumer process."""

    def __init__(self, factory: sessionmaker[Session], policy: Policy, window: timedelta,
                 dead_letters: DeadLetterSink, clock: Callable[[], datetime]) -> None:
        self._factory = factory
        self._policy = policy
        self._window = window
        self._dead_letters = dead_letters
        self._clock = clock

    def run(self) -> tuple[int, int]:
        """Apply parked events of accounts that now exist; dead-letter the expired ones."""
        drained = failed = 0
        with UnitOfWork(self._factory) as uow:
            ids = uow.accounts.landed_ids_with_parked()
        for account_id in ids:
            try:
                with UnitOfWork(self._factory) as uow:
                    drained += drain_parked(uow, account_id, self._policy)
                    uow.commit()
            except (IntegrityError, StaleDataError) as exc:  # a consumer got there first
                log.info("parked events of %s not drained yet: %s", account_id, exc)
            except Exception as exc:
                if is_infrastructure(exc):
                    raise
                # the rules cannot apply some (they were tried on arrival, but the account
                # differs): those become dead letters, not a sweep failing for good
                log.warning("parked events of %s not applied: %r", account_id, exc)
                dropped = drop_unappliable_parked(self._factory, self._dead_letters,
                                                  self._policy, account_id)
                if not dropped:  # no single one is to blame: all of them, with the reason
                    cls, text = describe(exc)
                    dropped = dead_letter_parked(
                        self._factory, self._dead_letters,
                        ParkedEventRow.account_id == account_id, "processing_error",
                        f"applying parked events failed: {text}", cls)
                failed += dropped
        expired = failed
        for _ in range(EXPIRY_CHUNKS_PER_RUN):
            done = dead_letter_parked(
                self._factory, self._dead_letters,
                (ParkedEventRow.parked_at < self._clock() - self._window)
                # a landed account's events are drained, not expired
                & ~exists().where(AccountRow.id == ParkedEventRow.account_id),
                "unknown_account",
                lambda row: f"no account {row.account_id!r} landed within {self._window}")
            expired += done
            if done < EXPIRY_CHUNK:
                break
        if drained or expired:
            log.info("parked events: %d applied late, %d dead-lettered", drained, expired)
        return drained, expired


def dead_letter_parked(factory: sessionmaker[Session], sink: DeadLetterSink,
                       where: ColumnElement[bool], reason: str,
                       message: str | Callable[[ParkedEventRow], str],
                       exception: str | None = None) -> int:
    """Dead-letter one chunk of the parked events `where` selects; clear their marks.

    Rows another consumer holds are skipped (`SKIP LOCKED` on PostgreSQL). Their processed
    marks go with them, so a replay or a redelivery applies them.
    """
    with UnitOfWork(factory) as uow:
        session = uow.session
        query = select(ParkedEventRow).where(where).order_by(ParkedEventRow.id)
        query = query.limit(EXPIRY_CHUNK)
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(of=ParkedEventRow, skip_locked=True)
        rows = list(session.scalars(query))
        if not rows:
            return 0
        letters = [DeadLetter(_record_from_origin(row.origin, row.account_id), reason,
                              message if isinstance(message, str) else message(row),
                              exception) for row in rows]
        # Acknowledged by the broker before the rows go: a crash repeats, never loses.
        try:
            sink(letters)
        except Exception as exc:
            raise DeadLetterUnsent(f"{len(letters)} dead letters: {exc}") from exc
        keys = [(str(row.event["source"]), str(row.event["id"])) for row in rows]
        session.execute(delete(ProcessedEventRow).where(
            tuple_(ProcessedEventRow.source, ProcessedEventRow.event_id).in_(keys)))
        session.execute(delete(ParkedEventRow).where(
            ParkedEventRow.id.in_([row.id for row in rows])))
        uow.commit()
        return len(rows)


def drop_unappliable_parked(factory: sessionmaker[Session], sink: DeadLetterSink,
                            policy: Policy, account_id: str,
                            landing: CloudEvent | None = None) -> int:
    """Dead-letter the parked events of an account that the rules cannot apply to it (after
    `landing`, when it is the landing that failed because of them); returns how many."""
    with UnitOfWork(factory) as uow:
        account = uow.accounts.get(account_id)
        parked = [(row_id, event) for row_id, _, event
                  in batch_reads.parked_events(uow.session, [account_id])]
    failed = failing_parked(account, landing, parked, policy)
    dropped = 0
    for row_id, exc in failed:
        cls, text = describe(exc)
        dropped += dead_letter_parked(
            factory, sink, ParkedEventRow.id == row_id, "processing_error",
            f"applying the parked event to its account failed: {text}", cls)
    return dropped
