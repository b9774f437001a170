"""A backtest into an output folder: the database, `actions.jsonl`, `summary.json`, and with
a second policy the same again and the accounts whose actions differ."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backtest.engine import Backtest, BacktestOptions
from backtest.output import actions, diff, tallies, write_actions
from backtest.overrides import Overrides
from backtest.stats import BacktestStats, Input
from flows.kit.settings import event_time_settings
from laer_domain.policy import Policy

log = logging.getLogger(__name__)


@dataclass
class FolderRun:
    """What to replay and where: the events, the folder, playbooks and both policies."""

    events: Sequence[Input]
    out: Path
    overrides: Overrides = field(default_factory=Overrides)
    compare: Overrides | None = None
    playbooks: Sequence[str] | None = None
    base_policy: Policy = field(default_factory=Policy)
    source: str = ""
    after_days: float = 0.0  # keep the playbooks running this long after the last event


def _fresh_db(path: Path) -> str:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return f"sqlite:///{path}"


def replay(run: FolderRun, name: str, overrides: Overrides,
           progress: Callable[[BacktestStats], None] | None = None
           ) -> tuple[BacktestStats, list[dict[str, Any]], dict[str, Any]]:
    """One replay into `<out>/<name>.db`; its stats, actions and tallies."""
    options = BacktestOptions(playbooks=run.playbooks,
                              policy=overrides.build_policy(run.base_policy),
                              playbook_settings=overrides.playbook,
                              after_days=run.after_days)
    bt = Backtest(_fresh_db(run.out / f"{name}.db"), options, progress=progress)
    try:
        stats = bt.run(run.events)
        records = actions(bt.engine)
        return stats, records, tallies(bt.engine, records)
    finally:
        bt.close()


def gate_used(overrides: Overrides) -> dict[str, Any]:
    """The outreach gate's cap and window a replay with `overrides` runs with (summary.json)."""
    settings = event_time_settings(overrides.playbook)  # what the engine's steps are given
    return {"frequency_cap": settings.frequency_cap,
            "frequency_window_days": settings.frequency_window_days}


def _render_report(out: Path, compare_db: Path | None, summary: dict[str, Any]) -> str | None:
    """report.html by backtest.report, where that module exists."""
    try:
        from backtest.report import render_report  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        log.info("backtest.report is not there: no report.html")
        return None
    url = f"sqlite:///{out / 'backtest.db'}"
    compare_url = f"sqlite:///{compare_db}" if compare_db else None
    return str(render_report(url, out, compare_url=compare_url, summary=summary))


def run_folder(run: FolderRun, progress: Callable[[BacktestStats], None] | None = None
               ) -> dict[str, Any]:
    """Replay (twice with `compare`), write the folder's files; the summary."""
    run.out.mkdir(parents=True, exist_ok=True)
    stats, records, counts = replay(run, "backtest", run.overrides, progress)
    write_actions(run.out / "actions.jsonl", records)
    summary: dict[str, Any] = {"source": run.source, "playbooks": list(run.playbooks or []),
                               "overrides": run.overrides.as_dict(), "run": stats.as_dict(),
                               "gate": gate_used(run.overrides),
                               **counts, "database": str(run.out / "backtest.db")}
    compare_db: Path | None = None
    if run.compare is not None:
        other = run.overrides.merged(run.compare)
        c_stats, c_records, c_counts = replay(run, "compare", other, progress)
        write_actions(run.out / "actions.compare.jsonl", c_records)
        compare_db = run.out / "compare.db"
        summary["compare"] = {"overrides": other.as_dict(), "run": c_stats.as_dict(),
                              "gate": gate_used(other),
                              **c_counts, "database": str(compare_db),
                              "diff": diff(records, c_records)}
    try:
        summary["report"] = _render_report(run.out, compare_db, summary)
    except Exception as exc:  # noqa: BLE001 - the replay's files stand without the report
        log.exception("report.html failed")
        summary["report"] = None
        summary["report_error"] = f"{type(exc).__name__}: {exc}"
    (run.out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True,
                                                     default=str) + "\n")
    return summary
