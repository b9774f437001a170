"""Upsell: an ROI summary to the buyer and a task for sales, never while at risk."""

from __future__ import annotations

from prefect import flow

from flows.kit.api import Playbook, SignalInfo, Step, StepContext, run_namer, run_playbook
from laer_domain.model import Account, Role, Stage
from laer_domain.outreach import Priority
from laer_domain.signals import SignalKind

PLAYBOOK = Playbook(
    name="upsell",
    triggers=frozenset({SignalKind.ExpansionOpportunity}),
    owner=Role.SALES,
    priority=Priority.UPSELL,
    description="ROI summary to the buyer and a sales task on an expansion opportunity",
)


def roi_and_task(ctx: StepContext) -> None:
    """Send the ROI summary (promotional: the gate blocks it at risk), then assign sales."""
    details = ctx.signal.details
    limit = details.get("limit")
    ctx.send("upsell_roi", roles=("buyer",), promotional=True,
             extra={"opportunity": str(limit) if limit else None})
    if ctx.account.churn_risk is not None:
        ctx.note("no sales task: a churn risk is open")
        return
    what = f"limit {limit} reached" if limit else str(ctx.signal.evidence.get("rule"))
    ctx.assign("expansion", f"Expansion opportunity: {what}", due_in_days=5,
               details={"opportunity": details})


STEPS = [Step("day-0", roi_and_task)]


def should_stop(account: Account, signal: SignalInfo, step: Step) -> str | None:
    """No upsell to a churned account."""
    if account.stage is Stage.CHURNED:
        return "account churned"
    return None


@flow(name="upsell", flow_run_name=run_namer("upsell", STEPS[0].name), log_prints=True)
def upsell(account_id: str, signal_id: str, step: str = "start") -> str:
    """Follow an expansion opportunity with an ROI summary and a sales task."""
    return run_playbook(PLAYBOOK, STEPS, should_stop, account_id, signal_id, step)


FLOW = upsell
