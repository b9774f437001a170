"""`laer up`, the README's main job, run for real and looked at in a browser."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import free_port
from tests.e2e.test_ui import ARTIFACTS, render


def test_laer_up_runs_a_cohort_and_shows_it_in_the_prefect_ui(tmp_path: Path) -> None:
    ui_port = free_port()
    env = dict(os.environ, LAER_STATE_DIR=str(tmp_path / "state"),
               LAER_DATABASE_URL=f"sqlite:///{tmp_path / 'laer.db'}",
               LAER_KAFKA__BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}",
               LAER_SMTP__PORT=str(free_port()), COLUMNS="160")
    env.pop("PREFECT_API_URL", None)
    log = (tmp_path / "up.log").open("w+b")
    proc = subprocess.Popen(
        [sys.executable, "-m", "laer.cli", "up", "--accounts", "12", "--prefect-port",
         str(ui_port), "--day-seconds", "2"],
        env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        output = ""
        while time.monotonic() < deadline and "Serving until Ctrl-C" not in output:
            assert proc.poll() is None, f"laer up exited early:\n{output[-3000:]}"
            time.sleep(2)
            output = (tmp_path / "up.log").read_text(errors="replace")
        assert "Serving until Ctrl-C" in output, output[-3000:]
        for table in ("accounts by stage", "signals by kind", "playbook runs by state",
                      "actions by status"):
            assert table in output
        assert f"http://127.0.0.1:{ui_port}" in output

        api = f"http://127.0.0.1:{ui_port}/api"
        completed = _wait_for_completed_runs(api, deadline)
        assert completed, "no playbook run completed"
        ui = f"http://127.0.0.1:{ui_port}"
        deployments = render(f"{ui}/deployments")
        for name in ("onboarding", "churn_rescue", "renewal_outreach"):
            assert name in deployments
        run = completed[0]
        shot = ARTIFACTS / "laer-up-flow-run.png"
        page = render(f"{ui}/runs/flow-run/{run['id']}", screenshot=shot)
        assert run["name"] in page and "Completed" in page
        artifacts = httpx.post(f"{api}/artifacts/filter", json={
            "artifacts": {"flow_run_id": {"any_": [run["id"]]}}}, timeout=30).json()
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


def _wait_for_completed_runs(api: str, deadline: float) -> list[dict[str, object]]:
    while time.monotonic() < deadline:
        runs = httpx.post(f"{api}/flow_runs/filter", json={
            "flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}},
            "sort": "ID_DESC", "limit": 20}, timeout=30).json()
        playbook_runs = [r for r in runs if "/" in str(r.get("name", ""))]
        if playbook_runs:
            return playbook_runs
        time.sleep(3)
    return []
