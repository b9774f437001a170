"""Onboarding: welcome a customer that just entered adopt and hand it to customer success."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from flows.kit import actions
from flows.kit.registry import Playbook
from flows.kit.runtime import app, current_flow_run_id, load_account, mark_run
from laer_domain.model import Role, Stage
from laer_domain.signals import SignalKind

PLAYBOOK = Playbook(
    name="onboarding",
    triggers=frozenset({SignalKind.StageChanged}),
    transitions=frozenset({(Stage.LAND, Stage.ADOPT), (Stage.RENEW, Stage.ADOPT)}),
    owner=Role.CUSTOMER_SUCCESS,
    priority=2,
    description="Welcome, training invite and adoption review once an account enters adopt",
)


@task(retries=3, retry_delay_seconds=2)
def current_stage(account_id: str) -> str | None:
    """Read the account's stage now (steps stop once it left adopt)."""
    account = load_account(account_id)
    return account.stage.value if account else None


@task(retries=3, retry_delay_seconds=2)
def assign_welcome_call(account_id: str, signal_id: str) -> str:
    """Record a welcome-call task for customer success."""
    row, _ = actions.record_action(
        app().sessions, key=f"onboarding:{signal_id}:welcome-call", account_id=account_id,
        playbook="onboarding", kind="task", role=Role.CUSTOMER_SUCCESS.value,
        subject="Welcome call: agree goals and success plan", status="open",
        flow_run_id=current_flow_run_id(), due_at=datetime.now(UTC) + timedelta(days=2))
    return row.subject


@flow(name="onboarding", flow_run_name="onboarding/{account_id}/{step}", log_prints=True)
def onboarding(account_id: str, signal_id: str, step: str = "welcome") -> str:
    """Welcome a newly adopted account and hand it to customer success."""
    mark_run("Running")
    stage = current_stage(account_id)
    if stage != Stage.ADOPT.value:
        done = f"skipped: account is in {stage}, not adopt"
    else:
        done = f"task: {assign_welcome_call(account_id, signal_id)}"
    create_markdown_artifact(
        key="onboarding-report",
        markdown=f"# Onboarding `{account_id}` ({step})\n\n"
                 f"Started by signal `{signal_id}`.\n\n- {done}\n",
        description="Why this run started and what it did",
    )
    mark_run("Completed")
    return done


FLOW = onboarding
