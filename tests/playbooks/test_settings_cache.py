"""Playbook settings are built once per environment, and follow it when it changes."""

from __future__ import annotations

import pytest

from flows.kit.current import CurrentStep, enter_step, leave_step
from flows.kit.settings import playbook_settings


def test_playbook_settings_are_reused_until_the_environment_changes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The same variables give the same settings object; a changed one is read again."""
    monkeypatch.setenv("LAER_PLAYBOOK_DAY_SECONDS", "5")
    first = playbook_settings()
    assert first.day_seconds == 5
    assert playbook_settings() is first
    monkeypatch.setenv("LAER_PLAYBOOK_DAY_SECONDS", "7")
    assert playbook_settings().day_seconds == 7
    monkeypatch.setenv("laer_playbook_frequency_cap", "5")  # read case-insensitively
    assert playbook_settings().frequency_cap == 5


def test_a_step_keeps_the_settings_it_started_with(monkeypatch: pytest.MonkeyPatch) -> None:
    """A step sees one set of settings throughout, whatever changes meanwhile."""
    monkeypatch.setenv("LAER_PLAYBOOK_DAY_SECONDS", "5")
    token = enter_step(CurrentStep(key="k", task_run_id="t"))
    try:
        assert playbook_settings().day_seconds == 5
        monkeypatch.setenv("LAER_PLAYBOOK_DAY_SECONDS", "9")
        assert playbook_settings().day_seconds == 5
    finally:
        leave_step(token)
    assert playbook_settings().day_seconds == 9
