"""Churn rescue: a task for the account owner, outreach now and a follow-up a week later."""

from __future__ import annotations

from prefect import flow

from flows.kit.api import Playbook, SignalInfo, Step, StepContext, run_namer, run_playbook
from laer_domain.model import Account, Role, Stage
from laer_domain.outreach import Priority
from laer_domain.signals import SignalKind

PLAYBOOK = Playbook(
    name="churn_rescue",
    triggers=frozenset({SignalKind.ChurnRiskRaised}),
    owner=Role.CUSTOMER_SUCCESS,
    priority=Priority.RESCUE,
    description="Owner task and outreach on a churn risk, follow-up after a week",
)


def _why(ctx: StepContext) -> str:
    risk = ctx.account.churn_risk
    return ", ".join(risk.rules) if risk else str(ctx.signal.evidence.get("rule"))


def rescue(ctx: StepContext) -> None:
    """Day 0: the account's owner gets a task; the contacts get a personal note."""
    ctx.assign("rescue-call", f"Churn risk: {_why(ctx)}", role=ctx.account.owner,
               due_in_days=1, details={"rule": ctx.signal.evidence.get("rule")})
    ctx.send("churn_rescue_outreach", roles=("buyer", "admin", "champion"))


def follow_up(ctx: StepContext) -> None:
    """Day 7: still at risk, so write again and have the owner follow up."""
    ctx.send("churn_rescue_followup", roles=("buyer", "admin", "champion"))
    ctx.assign("rescue-follow-up", f"Churn risk still open: {_why(ctx)}",
               role=ctx.account.owner, due_in_days=2)


STEPS = [Step("day-0", rescue, day=0), Step("day-7", follow_up, day=7)]


def should_stop(account: Account, signal: SignalInfo, step: Step) -> str | None:
    """Stop once the risk closed or the account churned."""
    if account.stage is Stage.CHURNED:
        return "account churned"
    if account.churn_risk is None:
        return "churn risk closed"
    return None


@flow(name="churn_rescue", flow_run_name=run_namer("churn_rescue", STEPS[0].name),
      log_prints=True)
def churn_rescue(account_id: str, signal_id: str, step: str = "start") -> str:
    """Rescue an account with an open churn risk."""
    return run_playbook(PLAYBOOK, STEPS, should_stop, account_id, signal_id, step)


FLOW = churn_rescue
