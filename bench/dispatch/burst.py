"""Measurement 2: the dispatcher drains while creators overload the server; no run doubles or
goes missing."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from bench.dispatch.outbox import BENCH_PLAYBOOK, CONCURRENCY, EMIT_EVENTS, drain_all, seed_signals
from persistence.tables import PlaybookRunRow, SignalRow


async def _hammer(api_url: str, deployment_id: Any, seconds: float, tag: str) -> Counter[str]:
    """Concurrent creators that overload a small server (answers 503 or time out)."""
    import httpx

    outcomes: Counter[str] = Counter()
    deadline = time.monotonic() + seconds

    async def one(worker: int) -> None:
        async with httpx.AsyncClient(base_url=api_url, timeout=30) as http:
            i = 0
            while time.monotonic() < deadline:
                i += 1
                try:
                    r = await http.post(f"/deployments/{deployment_id}/create_flow_run", json={
                        "parameters": {"account_id": f"h{worker}", "signal_id": str(i)},
                        "idempotency_key": f"hammer:{tag}:{worker}:{i}"})
                    outcomes[str(r.status_code)] += 1
                except httpx.HTTPError as exc:
                    outcomes[type(exc).__name__] += 1

    await asyncio.gather(*(one(w) for w in range(12)))
    return outcomes


async def _audit(sessions: Any, deployment_id: Any, tag: str, expected: int) -> tuple[int, int]:
    """Runs in Prefect per burst signal: more than one is a duplicate, none is a loss."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.sorting import FlowRunSort
    from sqlalchemy import select

    with sessions() as s:
        signal_ids = {sid for sid in s.scalars(select(SignalRow.id).where(
            SignalRow.id.like(f"sig-{tag}-%")))}
        recorded = Counter(s.scalars(select(PlaybookRunRow.signal_id).where(
            PlaybookRunRow.signal_id.in_(signal_ids))))
    per_signal: Counter[str] = Counter()
    async with get_client() as client:
        offset = 0
        while True:
            page = await client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
                sort=FlowRunSort.ID_DESC, limit=200, offset=offset)
            if not page:
                break
            for run in page:
                sid = str((run.parameters or {}).get("signal_id"))
                if sid in signal_ids:
                    per_signal[sid] += 1
            offset += len(page)
    duplicated = sum(n - 1 for n in per_signal.values() if n > 1) + sum(
        n - 1 for n in recorded.values() if n > 1)
    lost = sum(1 for sid in signal_ids if per_signal[sid] == 0)
    assert len(signal_ids) == expected
    return duplicated, lost


async def measure_burst(api_url: str, deployment_id: Any, sessions: Any, burst: int,
                        tag: str) -> tuple[Counter[str], int, int]:
    """`burst` signals drained during 20 s of overload: the server's answers to the
    creators, and the signals with duplicated and with lost runs."""
    from dispatch.dispatcher import Dispatcher  # Prefect on import: after main's setup
    from dispatch.settings import PrefectSettings

    seed_signals(sessions, burst, "b" + tag)
    dispatcher = Dispatcher(sessions, [BENCH_PLAYBOOK],
                            PrefectSettings(dispatch_concurrency=CONCURRENCY), retry_for_s=120,
                            emit_events=EMIT_EVENTS)
    hammer = asyncio.create_task(_hammer(api_url, deployment_id, 20, tag))
    await drain_all(dispatcher)
    outcomes = await hammer
    duplicated, lost = await _audit(sessions, deployment_id, "b" + tag, burst)
    return outcomes, duplicated, lost
