"""The report draws the frequency cap each run used, as the run's summary.json records it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from backtest.overrides import from_pairs
from backtest.report import render_report
from backtest.report_data import recorded_gate
from backtest.run import FolderRun, run_folder
from tests.backtest.conftest import refusing_network


def test_the_report_draws_the_cap_each_run_used(
        cohort: list[dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the baseline's cap comes from the environment, the variant's from an override: neither
    # is the default of two
    monkeypatch.setenv("LAER_PLAYBOOK_FREQUENCY_CAP", "4")
    with refusing_network():
        summary = run_folder(FolderRun(events=cohort, out=tmp_path,
                                       compare=from_pairs(["frequency_cap=1"])))
    assert summary["gate"] == {"frequency_cap": 4, "frequency_window_days": 7.0}
    assert summary["compare"]["gate"] == {"frequency_cap": 1, "frequency_window_days": 7.0}
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "Contact-weeks above the cap of 4" in page
    assert "Contact-weeks above the cap of 1" in page
    assert "the frequency cap (4 per 7 days)" in page
    assert "cap of 2" not in page and "(2 per 7 days)" not in page


def test_a_report_drawn_again_reads_the_folders_summary(
        replayed: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    folder, summary = replayed
    recorded = {**summary, "gate": {"frequency_cap": 5, "frequency_window_days": 14.0}}
    (tmp_path / "summary.json").write_text(json.dumps(recorded, default=str))
    page = render_report(f"sqlite:///{folder / 'backtest.db'}", tmp_path).read_text("utf-8")
    assert "the frequency cap (5 per 14 days)" in page
    assert "Contact-weeks above the cap of 5" in page


def test_a_summary_without_the_gate_falls_back_to_its_overrides_then_the_default() -> None:
    old = {"overrides": {"policy": {}, "playbook": {"frequency_cap": "3"}}}
    assert recorded_gate(old).frequency_cap == 3
    assert recorded_gate({}).frequency_cap == 2
    assert recorded_gate({"gate": {"frequency_cap": 1, "frequency_window_days": 2.5}}
                         ).frequency_window.total_seconds() == 2.5 * 86400
