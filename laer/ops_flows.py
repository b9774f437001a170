"""Scheduled operations flows: the daily time-based sweep and the health roll-up."""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from sqlalchemy import func, select

from flows.kit.reconcile import reconcile_playbooks
from laer.bootstrap import container
from persistence.sweep import sweep_in_chunks
from persistence.tables import AccountRow


@task(retries=3, retry_delay_seconds=5)
def sweep_accounts(at: datetime) -> dict[str, int]:
    """Apply every time-based rule due by `at` to every live account, a chunk at a time."""
    c = container()
    report = sweep_in_chunks(c.sessions, c.policy, at, chunk_size=c.settings.sweep_chunk_size)
    return dict(report.signals)


@flow(name="daily-sweep", flow_run_name="daily-sweep/{at}")
def daily_sweep(at: str | None = None) -> dict[str, int]:
    """Evaluate renewal windows, lapsed terms, stalls and underused features for an instant."""
    instant = datetime.fromisoformat(at) if at else datetime.now(UTC)
    kinds = sweep_accounts(instant)
    create_markdown_artifact(
        key="daily-sweep",
        markdown="# Daily sweep\n\n" + (
            "\n".join(f"- {k}: {n}" for k, n in sorted(kinds.items())) or "- no signals"),
        description="Signals raised by the time-based rules")
    return kinds


@task
def health_bands() -> list[dict[str, object]]:
    """Count accounts per stage and health band."""
    with container().sessions() as session:
        rows = session.execute(
            select(AccountRow.stage, AccountRow.health_band, func.count())
            .group_by(AccountRow.stage, AccountRow.health_band)
            .order_by(AccountRow.stage)).all()
    return [{"stage": s, "band": b or "-", "accounts": n} for s, b, n in rows]


@flow(name="health-rollup")
def health_rollup() -> list[dict[str, object]]:
    """Publish accounts by stage and health band as a table artifact."""
    rows = health_bands()
    create_table_artifact(key="health-rollup", table=rows,
                          description="Accounts by stage and health band")
    return rows


OPS_FLOWS = ((daily_sweep, "0 6 * * *"), (health_rollup, "0 * * * *"),
             (reconcile_playbooks, "*/5 * * * *"))
