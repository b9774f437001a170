"""`laer backtest` end to end, in a process of its own, from a shuffled gzip file."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from backtest.inputs import write_file
from laer.local.ports import free_port


def test_backtest_from_a_file_writes_the_folder_and_json(
        cohort: list[dict[str, Any]], tmp_path: Path) -> None:
    events = list(cohort[:400])
    random.Random(5).shuffle(events)
    source = tmp_path / "events.jsonl.gz"
    write_file(source, events)
    policy = tmp_path / "cap.toml"
    policy.write_text("[playbook]\nfrequency_cap = 1\n")
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAER_")}
    # a relay nobody listens on: a backtest must not need one
    env.update(LAER_SMTP__PORT=str(free_port()), LAER_SMTP__TIMEOUT_S="1",
               LAER_STATE_DIR=str(tmp_path / "state"))
    done = subprocess.run(
        [sys.executable, "-m", "laer.cli", "backtest", "--from-file", str(source),
         "--out", str(out), "--playbooks", "onboarding,adoption_nudge",
         "--set", "renewal_window_days=120", "--compare", str(policy), "--after-days", "30",
         "--json"],
        env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["run"]["handled"] == len(events)
    # the playbooks ran on for 30 simulated days after the last event (the sweep and steps)
    last, until = (datetime.fromisoformat(summary["run"][k])
                   for k in ("last_event", "simulated_until"))
    assert last < until <= last + timedelta(days=30)
    assert summary["overrides"]["policy"] == {"renewal_window_days": "120"}
    assert summary["compare"]["overrides"]["playbook"] == {"frequency_cap": "1"}
    for name in ("actions.jsonl", "actions.compare.jsonl", "summary.json", "backtest.db",
                 "compare.db", "backtest.log"):
        assert (out / name).exists(), name
    records = [json.loads(x) for x in (out / "actions.jsonl").read_text().splitlines()]
    assert records and {r["playbook"] for r in records} <= {"onboarding", "adoption_nudge"}
    emails = [r for r in records if r["kind"] == "email"]
    assert emails and {r["status"] for r in emails} <= {"sent", "deferred"}
    assert summary["compare"]["held_back"], summary["compare"]
    assert done.stderr.strip() == "" or "Traceback" not in done.stderr


def test_a_bad_override_is_refused_before_anything_runs(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "laer.cli", "backtest", "--from-simulation", "--accounts", "1",
         "--out", str(tmp_path / "out"), "--set", "no_such_thing=3"],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "no_such_thing" in done.stderr
    assert not (tmp_path / "out").exists()
