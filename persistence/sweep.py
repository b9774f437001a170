"""The time-based sweep over the whole store, in bounded chunks: one transaction per chunk.

A single transaction over every live account would hold all their locks for the whole sweep,
and a consumer's batch touching any of them would wait, past its max_poll_interval. Here a
chunk's accounts are locked `FOR UPDATE SKIP LOCKED` (PostgreSQL), swept and committed; an
account a consumer holds at that moment is skipped and tried again after the pass, a few times
with growing pauses. One still held after the last try is reported, not waited for: the next
sweep applies whatever came due meanwhile (the rules are idempotent at an instant, and what
is due by a later instant includes what was due by an earlier one).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from laer_domain.policy import Policy
from laer_domain.service import LifecycleService
from persistence.uow import UnitOfWork

log = logging.getLogger(__name__)

# pauses before each pass over the skipped accounts: a consumer holds an account for one
# batch transaction (well under a second), so a few seconds in all are plenty
RETRY_PAUSES_S = (0.2, 0.5, 1.0, 2.0, 4.0)


@dataclass
class SweepReport:
    """What a chunked sweep did: accounts swept, signals by kind, accounts left locked."""

    swept: int = 0
    signals: Counter[str] = field(default_factory=Counter)
    chunks: int = 0
    skipped: list[str] = field(default_factory=list)


def sweep_in_chunks(factory: sessionmaker[Session], policy: Policy, at: datetime, *,
                    chunk_size: int = 200,
                    retry_pauses: Sequence[float] = RETRY_PAUSES_S,
                    pause: Callable[[float], None] = time.sleep) -> SweepReport:
    """Sweep every live account as of `at`, `chunk_size` accounts per transaction."""
    report = SweepReport()
    skipped: list[str] = []
    after: str | None = None
    while True:
        with UnitOfWork(factory) as uow:
            ids = uow.accounts.live_ids_after(after, chunk_size)
            if not ids:
                break
            skipped += _sweep_chunk(uow, policy, at, ids, report)
        after = ids[-1]
    for wait in retry_pauses:
        if not skipped:
            break
        pause(wait)
        pending, skipped = skipped, []
        for start in range(0, len(pending), chunk_size):
            with UnitOfWork(factory) as uow:
                skipped += _sweep_chunk(uow, policy, at, pending[start:start + chunk_size],
                                        report)
    if skipped:
        log.warning("sweep at %s: %d accounts stayed locked, left to the next sweep: %s",
                    at.isoformat(), len(skipped), ", ".join(skipped[:20]))
    report.skipped = skipped
    return report


def _sweep_chunk(uow: UnitOfWork, policy: Policy, at: datetime, ids: list[str],
                 report: SweepReport) -> list[str]:
    """Lock, sweep and commit one chunk; returns the ids skipped because they were locked."""
    accounts, skipped = uow.accounts.lock_live(ids)
    outcomes = LifecycleService(uow.accounts, policy).sweep(at, accounts)
    uow.commit()
    report.chunks += 1
    report.swept += len(outcomes)
    report.signals.update(s.kind.value for o in outcomes for s in o.signals)
    return skipped
