"""The reactions benchmark: its arithmetic on fabricated rows, and a small run end to end."""

from __future__ import annotations

import os
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.reactions import measure
from bench.reactions.measure import Executed
from bench.reactions.run import targets
from bench.reactions.workload import build, release
from flows.kit.registry import discover
from persistence.db import make_engine, upgrade
from persistence.tables import OutboxRow, SignalRow
from persistence.uow import session_factory

T = datetime(2026, 3, 1, 12, tzinfo=UTC)


def _at(seconds: float) -> datetime:
    return T + timedelta(seconds=seconds)


def test_latency_is_queueing_to_the_earliest_action_of_each_signal() -> None:
    queued = {"s1": _at(0), "s2": _at(1), "s3": _at(2)}
    actions = [("s1", _at(3)), ("s1", _at(0.5)), ("s2", _at(1.25)), ("other", _at(0))]
    assert measure.latencies(queued, actions) == [0.25, 0.5]  # s3 never acted
    assert measure.p50_p99([]) == (None, None)
    ordered = [float(i) for i in range(1, 101)]
    assert measure.p50_p99(ordered) == (50.0, 99.0)


def test_lost_is_an_expected_pair_without_an_executed_step() -> None:
    steps = [Executed("a", "onboarding", "onboarding/a/day-0", _at(1)),
             Executed("a", "onboarding", "onboarding/a/day-3", _at(9)),
             Executed("b", "upsell", "upsell/b/day-0", _at(2))]
    expected = {("a", "onboarding"), ("b", "upsell"), ("c", "win_back")}
    assert measure.lost(expected, steps) == {("c", "win_back")}
    assert measure.first_done(steps)[("a", "onboarding")] == _at(1)


def test_duplicates_are_extra_copies_of_one_step_or_message() -> None:
    steps = [Executed("a", "upsell", "upsell/a/day-0", _at(1)),
             Executed("a", "upsell", "upsell/a/day-0", _at(2), attempts=2),
             Executed("b", "upsell", "upsell/b/day-0", _at(2))]
    assert measure.duplicated_steps(steps) == 1
    # two signals of one account and playbook: two steps of one name, none doubled
    twins = [Executed("a", "nudge", "nudge/a/day-0", _at(1), key="k1"),
             Executed("a", "nudge", "nudge/a/day-0", _at(2), key="k2")]
    assert measure.duplicated_steps(twins) == 0
    assert measure.extra_shown(Counter({"nudge/a/day-0": 2}), twins) == 0
    assert measure.extra_shown(Counter({"nudge/a/day-0": 3, "x": 1}), twins) == 2
    assert measure.extra_copies(Counter({"<m1>": 3, "<m2>": 1})) == 2
    assert measure.extra_copies(Counter({"<m1>": 1})) == 0


def test_steps_per_second_counts_the_window_after_the_release() -> None:
    steps = [Executed("a", "p", f"p/a/{i}", _at(i)) for i in range(11)]  # 0 s .. 10 s
    assert measure.steps_per_second(steps, _at(0), _at(10)) == 1.0  # (0, 10]: 10 steps
    assert measure.steps_per_second(steps, _at(0), _at(0)) == 0.0


def _result(backend: str, steps_per_s: float, p99: float | None, lost: int = 0,
            dup: int = 0, baseline: float = 1.0) -> dict[str, object]:
    return {"backend": backend, "burst": {"steps_per_s": steps_per_s, "lost": lost},
            "steady": {"latency_p99_s": p99, "lost": 0},
            "duplicated": {"message_ids": dup, "prefect_runs": 0, "steps": 0},
            "baseline": {"runs_per_s": baseline}}


def test_targets_are_marked_per_backend() -> None:
    assert targets(_result("embedded", 60, 1.0, baseline=5)) == {
        "steps_per_s": True, "p99": True, "nothing_lost": True, "nothing_duplicated": True,
        "ratio": True}
    missed = targets(_result("embedded", 40, 6.0, lost=1, dup=1, baseline=5))
    assert not any(missed.values())
    assert targets(_result("postgresql", 40, None))["steps_per_s"] is None  # embedded only


def test_the_workload_covers_every_playbook_and_releases_in_one_transaction(
        tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'laer.db'}")
    upgrade(engine)
    sessions = session_factory(engine)
    playbooks = [d.playbook for d in discover()]
    held = build(sessions, playbooks, "t", 300, datetime.now(UTC))
    assert len(held.signals) == 300
    assert {pb for pbs in held.playbooks.values() for pb in pbs} == {p.name for p in playbooks}
    with sessions() as s:  # held back: nothing queued yet
        assert s.query(SignalRow).count() == 0
    queued = release(sessions, held.signals)
    with sessions() as s:
        rows = s.query(OutboxRow).all()
        assert len(rows) == 300 and {r.created_at for r in rows} == {queued}
        assert {r.status for r in rows} == {"pending"}
    engine.dispose()


def test_a_small_run_end_to_end(tmp_path: Path) -> None:
    """The whole benchmark on the embedded backend at a tiny scale: every step executed."""
    import json
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "bench.reactions", "--backends", "embedded", "--burst", "6",
         "--steady-s", "1", "--baseline-runs", "2", "--bound-s", "150", "--json"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "TMPDIR": str(tmp_path)},
        check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    (result,) = json.loads(out.stdout)["results"]
    assert result["burst"]["lost"] == 0 and result["steady"]["lost"] == 0
    assert result["duplicated"] == {"message_ids": 0, "prefect_runs": 0, "steps": 0}
    assert result["baseline"]["completed"] == 2
