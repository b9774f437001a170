"""One backend's measurement: build the workload, start the system, warm up, the burst, the
steady stream, what Prefect shows, then the plain Prefect baseline on the same server."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.reactions import cpu, measure, prefect_view
from bench.reactions.baseline import measure_baseline
from bench.reactions.system import System, app_database
from bench.reactions.workload import Held, build, release
from persistence.db import make_engine, upgrade
from persistence.uow import session_factory


@dataclass(frozen=True)
class Options:
    burst: int
    steady_rate: float
    steady_s: float
    baseline_runs: int
    baseline_limit: int
    bound_s: float
    day_seconds: float
    postgres_url: str
    prefect_postgres_url: str


def _wait(what: str, done: Callable[[], bool], bound_s: float, system: System) -> bool:
    """Poll `done` until it holds or `bound_s` passes (False then); children must live."""
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        system.check()
        try:
            if done():
                return True
        except httpx.HTTPError:  # a busy SQLite-backed Prefect answers late or 503: ask again
            pass
        time.sleep(0.5)
    return False


def _burst(system: System, sessions: Any, held: Held, prefix: str, o: Options,
           say: Callable[[str], None]) -> dict[str, Any]:
    say(f"burst: {len(held.signals)} signals at once")
    expected = held.expected()
    cpu_before, own_before = cpu.snapshot(system.groups()), time.process_time()
    released = release(sessions, held.signals)
    state: dict[str, Any] = {}

    def all_first_steps() -> bool:
        return not expected - measure.done_pairs(sessions, prefix)

    _wait("burst", all_first_steps, o.bound_s, system)
    cpu_after = cpu.snapshot(system.groups())
    state["source"], state["steps"] = measure.executed(sessions, prefix)
    cpu_before["bench"], cpu_after["bench"] = own_before, time.process_time()  # SMTP, polls
    steps: list[measure.Executed] = state["steps"]
    firsts = measure.first_done(steps)
    last = max(firsts.values(), default=released)
    rate = measure.steps_per_second(steps, released, last)
    in_window = sum(1 for s in steps if released < s.done_at <= last)
    # report lag: from the last step done in the store until Prefect shows as many
    shown_target = sum(1 for s in steps if s.done_at <= last)
    lag: float | None = None
    if _wait("prefect", lambda: prefect_view.shown(system.prefect.api_url, prefix + "-",
                                                   state["source"]) >= shown_target,
             o.bound_s, system):
        lag = (datetime.now(UTC) - last).total_seconds()
    lost = measure.lost(expected, steps)
    return {"signals": len(held.signals), "expected_first_steps": len(expected),
            "steps_done": len(steps), "steps_per_s": round(rate, 2),
            "seconds": round((last - released).total_seconds(), 2), "source": state["source"],
            "lost": len(lost), "lost_examples": sorted(map("/".join, lost))[:5],
            "report_lag_s": None if lag is None else round(max(lag, 0.0), 2),
            "duplicated_steps": measure.duplicated_steps(steps),
            "retried_steps": sum(1 for s in steps if s.attempts > 1),
            # CPU ms per step of each process from the release until every first step was
            # done (the Prefect server's catching up afterwards is not in it)
            "cpu_ms_per_step": cpu.per_unit_ms(cpu_before, cpu_after, in_window),
            "load": os.getloadavg()[0]}


def _steady(system: System, sessions: Any, held: Held, prefix: str, o: Options,
            say: Callable[[str], None]) -> dict[str, Any]:
    say(f"steady stream: {len(held.signals)} signals at {o.steady_rate:g}/s")
    started = time.monotonic()
    for i, signal in enumerate(held.signals):
        pause = started + i / o.steady_rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        release(sessions, [signal])
        if i % 20 == 0:
            system.check()
    expected = held.expected()
    state: dict[str, Any] = {}

    def all_first_steps() -> bool:
        state["source"], state["steps"] = measure.executed(sessions, prefix)
        return not measure.lost(expected, state["steps"])

    _wait("steady", all_first_steps, o.bound_s, system)
    queued = measure.queued_at(sessions, [s.id for s in held.signals])
    ordered = measure.latencies(queued, measure.first_actions(sessions, prefix))
    p50, p99 = measure.p50_p99(ordered)
    lost = measure.lost(expected, state["steps"])
    return {"signals": len(held.signals), "signals_with_an_action": len(ordered),
            "latency_p50_s": None if p50 is None else round(p50, 3),
            "latency_p99_s": None if p99 is None else round(p99, 3),
            "latency_max_s": round(ordered[-1], 3) if ordered else None,
            "lost": len(lost), "duplicated_steps": measure.duplicated_steps(state["steps"]),
            "source": state["source"]}


def run_backend(backend: str, o: Options, tag: str, say: Callable[[str], None]
                ) -> dict[str, Any]:
    """Every measurement on one backend; stops all it started, whatever happens."""
    from flows.kit.registry import discover  # imports Prefect: after main set its env
    from laer.ops_flows import OPS_FLOWS

    home = Path(tempfile.mkdtemp(prefix=f"bench-reactions-{backend}-"))
    url = app_database(backend, home, o.postgres_url)
    engine = make_engine(url)
    upgrade(engine)
    sessions = session_factory(engine)
    playbooks = [d.playbook for d in discover()]
    now = datetime.now(UTC)
    prefix = f"rx{tag}{backend[0]}"
    say(f"[{backend}] building accounts through the domain (logs in {home / 'logs'}) ...")
    warm = build(sessions, playbooks, prefix + "w", 1, now)
    burst = build(sessions, playbooks, prefix + "b", o.burst, now)
    steady = build(sessions, playbooks, prefix + "s", round(o.steady_rate * o.steady_s), now)
    system = System(home, url, None if backend == "embedded" else o.prefect_postgres_url,
                    o.day_seconds)
    try:
        say(f"[{backend}] starting Prefect, SMTP, `laer serve` and `laer dispatch` ...")
        system.start_servers()
        system.start_processes()
        # `laer serve` registers its ops deployments while its executor runs: under the
        # burst that took minutes, and a 503 from the busy server then stopped it
        if not _wait("ops deployments", lambda: prefect_view.ops_deployments(
                system.prefect.api_url) >= len(OPS_FLOWS), o.bound_s, system):
            raise RuntimeError("`laer serve` registered no ops deployments; see " + str(home))
        release(sessions, warm.signals)
        if not _wait("warm-up", lambda: bool(measure.first_actions(sessions, prefix + "w")),
                     o.bound_s, system):
            raise RuntimeError("warm-up: no action within the bound; see " + str(home))
        result: dict[str, Any] = {"backend": backend, "home": str(home)}
        result["burst"] = _burst(system, sessions, burst, prefix + "b", o,
                                 lambda m: say(f"[{backend}] {m}"))
        result["steady"] = _steady(system, sessions, steady, prefix + "s", o,
                                   lambda m: say(f"[{backend}] {m}"))
        source = result["burst"]["source"]
        result["duplicated"] = {
            "message_ids": measure.extra_copies(system.smtp.message_ids()),
            "prefect_runs": measure.extra_shown(
                prefect_view.names(system.prefect.api_url, prefix, source),
                [step for part in "wbs" for step in measure.executed(sessions, prefix + part)[1]]),
            "steps": result["burst"]["duplicated_steps"] + result["steady"]["duplicated_steps"]}
        result["messages"] = len(system.smtp.received)
        system.stop_processes()
        say(f"[{backend}] baseline: {o.baseline_runs} trivial flow runs on `serve` ...")
        result["baseline"] = measure_baseline(system.prefect.api_url, home / "baseline",
                                              o.baseline_runs, o.baseline_limit, o.bound_s)
        return result
    finally:
        system.stop()
        engine.dispose()
