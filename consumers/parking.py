"""Parked events: applied when a concurrent landing raced them, dead-lettered when unclaimed."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from consumers.dlq import DeadLetter, DeadLetterSink
from consumers.records import RawRecord
from laer_domain.policy import Policy
from laer_domain.service import LifecycleService
from persistence.uow import UnitOfWork

log = logging.getLogger(__name__)


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
        drained = 0
        with UnitOfWork(self._factory) as uow:
            ids = uow.accounts.landed_ids_with_parked()
        for account_id in ids:
            try:
                with UnitOfWork(self._factory) as uow:
                    drained += drain_parked(uow, account_id, self._policy)
                    uow.commit()
            except (IntegrityError, StaleDataError) as exc:  # a consumer got there first
                log.info("parked events of %s not drained yet: %s", account_id, exc)
        with UnitOfWork(self._factory) as uow:
            expired = uow.accounts.expired_parked(self._clock() - self._window)
            if not expired:
                return drained, 0
            letters = [DeadLetter(_record_from_origin(row.origin, row.account_id),
                                  "unknown_account",
                                  f"no account {row.account_id!r} landed within "
                                  f"{self._window}")
                       for row in expired]
            # Acknowledged by the broker before the rows go: a crash repeats, never loses.
            self._dead_letters(letters)
            uow.accounts.delete_parked(row.id for row in expired)
            uow.commit()
        log.info("parked events: %d applied late, %d dead-lettered", drained, len(expired))
        return drained, len(expired)
