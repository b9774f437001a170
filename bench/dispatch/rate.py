"""Measurement 1: runs per second, a plain client loop against the dispatcher."""

from __future__ import annotations

import time
from typing import Any

from bench.dispatch.outbox import BENCH_PLAYBOOK, CONCURRENCY, EMIT_EVENTS, drain_all, seed_signals
from bench.dispatch.server import wait_until_stored


async def _plain_loop(client: Any, deployment_id: Any, n: int, tag: str) -> None:
    for i in range(n):
        await client.create_flow_run_from_deployment(
            deployment_id, parameters={"account_id": f"plain-{tag}-{i}", "signal_id": str(i)},
            idempotency_key=f"plain:{tag}:{i}")


async def measure_rates(client: Any, deployment_id: Any, sessions: Any, runs: int,
                        rounds: int, tag: str) -> dict[str, float]:
    """Runs per second of the plain loop, the dispatcher, and the dispatcher without events.

    Each creates `runs` runs in `rounds` rounds; each round is timed until the server has
    stored the events it caused.
    """
    from dispatch.dispatcher import Dispatcher  # Prefect on import: after main's setup
    from dispatch.settings import PrefectSettings

    limits = PrefectSettings(dispatch_concurrency=CONCURRENCY)
    dispatchers = {
        "dispatcher": Dispatcher(sessions, [BENCH_PLAYBOOK], limits, emit_events=EMIT_EVENTS),
        "dispatcher, no journey events": Dispatcher(
            sessions, [BENCH_PLAYBOOK], limits, emit_events=False)}
    kinds = ["plain", *dispatchers]
    seconds = dict.fromkeys(kinds, 0.0)
    per_round = max(1, runs // rounds)
    await _plain_loop(client, deployment_id, 5, "warmup" + tag)
    created, announced = 5, 0
    # Rotate which goes first each round: the server slows as runs pile up, and that must hit
    # all alike.
    for r in range(rounds):
        for kind in kinds[r % len(kinds):] + kinds[:r % len(kinds)]:
            started = time.perf_counter()
            created += per_round
            if kind == "plain":
                await _plain_loop(client, deployment_id, per_round, f"{r}{tag}")
            else:
                seed_signals(sessions, per_round, f"d{r}{len(kind)}{tag}")
                started = time.perf_counter()
                await drain_all(dispatchers[kind])
                announced += per_round if dispatchers[kind]._emit else 0  # noqa: SLF001
            await wait_until_stored(client, created, announced)
            seconds[kind] += time.perf_counter() - started
    return {kind: per_round * rounds / s for kind, s in seconds.items()}
