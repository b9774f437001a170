"""`python -m bench.backtest` runs end to end at a tiny scale and writes its figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.kafka]


def test_bench_backtest_smoke(tmp_path: Path) -> None:
    out = tmp_path / "backtest.json"
    done = subprocess.run([sys.executable, "-m", "bench.backtest", "--accounts", "3",
                           "--pipeline", "--out", str(out)], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads(out.read_text())
    assert results["backtest"]["steps"] > 0 and results["backtest"]["rate"] > 0
    assert results["live"]["pipeline_sqlite"]["rate"] > 0 and results["live"]["raw"]["rate"] > 0
    ratio = results["backtest"]["rate"] / results["live"]["pipeline_sqlite"]["rate"]
    assert results["backtest_x_live_pipeline"] == pytest.approx(ratio, rel=1e-3)
    assert "WARNING" not in done.stdout  # library logs go to the log file
    assert (tmp_path / "backtest.log").exists()
