"""The LAER side of the run-creation benchmark: stored signals and the dispatcher draining them."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from typing import Any

from flows.kit.registry import Playbook
from laer_domain.model import Role, Stage
from laer_domain.signals import SignalKind
from persistence.tables import AccountRow, OutboxRow, SignalRow

EMIT_EVENTS = os.environ.get("LAER_BENCH_EMIT_EVENTS", "1") == "1"
CONCURRENCY = int(os.environ.get("LAER_BENCH_CONCURRENCY", "1"))
BENCH_PLAYBOOK = Playbook(name="bench-noop", triggers=frozenset({SignalKind.WentLive}),
                          owner=Role.CUSTOMER_SUCCESS, priority=1)


def seed_signals(sessions: Any, n: int, tag: str) -> None:
    """`n` accounts, each with a stored WentLive signal waiting in the outbox."""
    now = datetime.now(UTC)
    with sessions() as s:
        for i in range(n):
            account = f"bench-{tag}-{i:05d}"
            s.add(AccountRow(id=account, stage="adopt", stage_since=now, owner="sales",
                             health_score=None, health_band=None, state={}, updated_at=now))
            s.flush()
            sig = f"sig-{tag}-{i:05d}"
            s.add(SignalRow(id=sig, seq=i, account_id=account, kind="WentLive", at=now,
                            stage=Stage.ADOPT.value, evidence={"rule": "bench"}))
            s.flush()
            s.add(OutboxRow(signal_id=sig, account_id=account, kind="WentLive", created_at=now))
        s.commit()


async def drain_all(dispatcher: Any) -> None:
    """Drain until the outbox holds nothing pending."""
    while True:
        report = await dispatcher.drain(limit=200)
        if report.signals == 0:
            from sqlalchemy import func, select

            with dispatcher._factory() as s:  # noqa: SLF001 - benchmark peeks at the outbox
                if not s.scalar(select(func.count()).select_from(OutboxRow)
                                .where(OutboxRow.status == "pending")):
                    return
            await asyncio.sleep(0.2)
