"""The engine's shortcuts (quiet windows joined into one transaction, the dedup ledger kept in
memory, the sweep skipping what cannot change) leave every result as the reference path
leaves it: one transaction per window, as before, every live account swept and written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from backtest.engine import Backtest, BacktestOptions
from backtest.inputs import from_simulation
from backtest.stats import BacktestStats
from persistence.tables import Base

# written with the instant of the transaction that wrote them, which a joined window moves;
# and a step queued by a step gets the wall clock as its created_at (flows/kit/scheduling.py)
NOW_COLUMNS = {("accounts", "updated_at"), ("accounts", "version"),
               ("processed_events", "processed_at"), ("parked_events", "parked_at"),
               ("playbook_steps", "created_at")}


def dump(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's rows in primary-key order, without the columns in NOW_COLUMNS."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            cols = [c for c in table.columns if (table.name, c.name) not in NOW_COLUMNS]
            out[table.name] = [tuple(r) for r in conn.execute(
                select(*cols).order_by(*table.primary_key.columns))]
    return out


def replay(events: list[dict[str, Any]], path: Path, options: BacktestOptions
           ) -> tuple[BacktestStats, dict[str, list[tuple[Any, ...]]]]:
    """The events replayed into a new database at `path`; the stats and the tables."""
    bt = Backtest(f"sqlite:///{path}", options)
    try:
        stats = bt.run(events)
        return stats, dump(bt.engine)
    finally:
        bt.close()


@pytest.fixture(scope="module")
def cohort() -> list[dict[str, Any]]:
    """A year of 20 simulated accounts (enough for every playbook and a few churns)."""
    return from_simulation(accounts=20, seed=7)


@pytest.fixture(scope="module")
def reference(cohort: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
              ) -> tuple[BacktestStats, dict[str, list[tuple[Any, ...]]]]:
    """The cohort through the reference path."""
    return replay(cohort, tmp_path_factory.mktemp("ref") / "ref.db",
                  BacktestOptions(shortcuts=False))


def test_the_shortcuts_change_no_row(
        cohort: list[dict[str, Any]], tmp_path: Path,
        reference: tuple[BacktestStats, dict[str, list[tuple[Any, ...]]]]) -> None:
    ref_stats, ref_rows = reference
    stats, rows = replay(cohort, tmp_path / "fast.db", BacktestOptions())
    assert ref_rows["actions"] and ref_rows["stage_changes"] and ref_rows["signals"]
    for table, expected in ref_rows.items():
        assert rows[table] == expected, table
    assert (stats.statuses, stats.steps, stats.signals, stats.runs_started, stats.sweeps) == (
        ref_stats.statuses, ref_stats.steps, ref_stats.signals, ref_stats.runs_started,
        ref_stats.sweeps)
    # and they are taken: fewer transactions and statements than the reference
    assert stats.batches < ref_stats.batches / 1.5, (stats.batches, ref_stats.batches)
    assert stats.statements["events"] < ref_stats.statements["events"] / 1.5
