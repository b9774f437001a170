"""The Prefect UI, seen as a person sees it: a playbook step as a completed task run."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.e2e.conftest import Stack
from tests.e2e.test_slice import first_step_done, landing_events, prefect_state

ARTIFACTS = Path(__file__).resolve().parents[2] / "screenshots"


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("Chromium is not installed (apt-get install chromium)", pytrace=False)
    return path


def render(url: str, screenshot: Path | None = None) -> str:
    """The DOM of a page after its scripts ran, from headless Chromium."""
    with tempfile.TemporaryDirectory() as profile:
        base = [chromium(), "--headless", "--no-sandbox", "--disable-gpu",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                "--virtual-time-budget=15000", "--window-size=1400,900"]
        dom = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True,
                             timeout=120)
        if screenshot is not None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run([*base, f"--screenshot={screenshot}", url], capture_output=True,
                           timeout=120, check=False)
    return dom.stdout


def test_prefect_ui_shows_a_playbook_step_as_a_completed_task_run(stack: Stack,
                                                                   unique: str) -> None:
    account = f"ui-{unique}"
    stack.produce(landing_events(account))
    step = stack.wait_for(lambda: first_step_done(stack, account), 180, "a step done")
    task_run_id = step.task_run_id
    assert task_run_id is not None
    stack.wait_for(lambda: prefect_state(stack, task_run_id) == "COMPLETED", 60,
                   "the step's task run in Prefect")
    ui = stack.env["PREFECT_API_URL"].removesuffix("/api")

    shot = ARTIFACTS / f"step-{stack.database_url.split(':')[0]}.png"
    page = render(f"{ui}/runs/task-run/{task_run_id}", screenshot=shot)
    assert f"onboarding/{account}/day-0" in page
    assert "Completed" in page
    assert shot.exists() and shot.stat().st_size > 10_000
