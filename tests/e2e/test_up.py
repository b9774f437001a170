"""`laer up`, the README's main job, run for real and looked at in a browser."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from persistence.db import make_engine
from persistence.tables import ActionRow
from tests.conftest import free_port
from tests.e2e.test_ui import ARTIFACTS, render

BOUND_S = 420  # from start to summary; about 100 s alone on this 2-core machine


def _actions(database: Path) -> Counter[tuple[str, str]]:
    engine = make_engine(f"sqlite:///{database}")
    try:
        with engine.connect() as conn:
            return Counter({(k, s): n for k, s, n in conn.execute(
                select(ActionRow.kind, ActionRow.status, func.count())
                .group_by(ActionRow.kind, ActionRow.status)).tuples()})
    finally:
        engine.dispose()


def test_laer_up_acts_on_a_cohort_and_shows_each_step_in_the_prefect_ui(tmp_path: Path) -> None:
    ui_port = free_port()
    database = tmp_path / "laer.db"
    env = dict(os.environ, LAER_STATE_DIR=str(tmp_path / "state"),
               LAER_DATABASE_URL=f"sqlite:///{database}",
               LAER_KAFKA__BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}",
               LAER_SMTP__PORT=str(free_port()), COLUMNS="160",
               # one message per contact per window: the gate has something to suppress
               LAER_PLAYBOOK_FREQUENCY_CAP="1")
    env.pop("PREFECT_API_URL", None)
    log = (tmp_path / "up.log").open("w+b")
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "laer.cli", "up", "--accounts", "40", "--prefect-port",
         str(ui_port), "--day-seconds", "2"],
        env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True)
    try:
        deadline = started + BOUND_S
        output = ""
        while time.monotonic() < deadline and "Serving until Ctrl-C" not in output:
            assert proc.poll() is None, f"laer up exited early:\n{output[-3000:]}"
            time.sleep(2)
            output = (tmp_path / "up.log").read_text(errors="replace")
        assert "Serving until Ctrl-C" in output, output[-3000:]
        for table in ("accounts by stage", "signals by kind", "playbook steps by status",
                      "actions by kind and status", "tasks by owner",
                      "messages held back, by reason"):
            assert table in output
        assert " INFO " not in output and "HTTP Request" not in output  # logs go to files
        assert f"http://127.0.0.1:{ui_port}" in output and "outbox.mbox" in output
        # Every kind of action, by the time the summary is printed (contacts live in four
        # time zones, so some are inside quiet hours whatever the hour).
        kinds = _actions(database)
        for kind in (("email", "sent"), ("email", "deferred"), ("email", "suppressed"),
                     ("task", "open")):
            assert kinds[kind] > 0, (kind, kinds)

        api = f"http://127.0.0.1:{ui_port}/api"
        run = _wait_for_step_task_run(api, deadline + 120)
        ui = f"http://127.0.0.1:{ui_port}"
        shot = ARTIFACTS / "laer-up-step.png"
        page = render(f"{ui}/runs/task-run/{run['id']}", screenshot=shot)
        assert run["name"] in page and "Completed" in page
        assert {t.split(":")[0] for t in run["tags"]} >= {"account", "playbook", "step"}
        artifacts = httpx.post(f"{api}/artifacts/filter", json={
            "artifacts": {"task_run_id": {"any_": [run["id"]]}}}, timeout=30).json()
        assert any(a["type"] == "markdown" for a in artifacts)
        assert shot.exists()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: stops everything it started
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        log.close()
    output = (tmp_path / "up.log").read_text(errors="replace")
    assert proc.returncode == 0, output[-3000:]
    assert "Stopped everything" in output


def _wait_for_step_task_run(api: str, deadline: float) -> dict[str, Any]:
    """A completed step's task run (`playbook/ACCOUNT/step`) whose artifact has arrived."""
    while time.monotonic() < deadline:
        try:
            runs = httpx.post(f"{api}/task_runs/filter", json={
                "task_runs": {"state": {"type": {"any_": ["COMPLETED"]}},
                              "name": {"like_": "onboarding/"}},
                "sort": "ID_DESC", "limit": 20}, timeout=30).json()
            for run in runs:
                if httpx.post(f"{api}/artifacts/filter", json={
                        "artifacts": {"task_run_id": {"any_": [run["id"]]}}},
                        timeout=30).json():
                    return dict(run)
        except httpx.TimeoutException:  # a busy machine: ask again until the deadline
            pass
        time.sleep(3)
    raise AssertionError("no step reached the Prefect API as a completed task run")
