"""Parked events: applied when a concurrent landing raced them, dead-lettered when unclaimed."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from consumers.dlq import DeadLetter, DeadLetterSink
from consumers.records import RawRecord
from laer_domain.persistence.uow import UnitOfWork
from laer_domain.policy import Policy
from laer_domain.service import LifecycleService

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
            with UnitOfWork(self._factory) as uow:
                drained += len(LifecycleService(uow.accounts, self._policy)
                               .drain_parked(account_id))
                uow.commit()
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
