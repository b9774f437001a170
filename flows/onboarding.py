"""Onboarding: welcome, training invite, check-in with survey and an adoption review."""

from __future__ import annotations

from prefect import flow

from flows.kit.api import Playbook, SignalInfo, Step, StepContext, run_namer, run_playbook
from laer_domain.model import Account, Role, Stage
from laer_domain.outreach import Priority
from laer_domain.signals import SignalKind

PLAYBOOK = Playbook(
    name="onboarding",
    triggers=frozenset({SignalKind.StageChanged}),
    transitions=frozenset({(Stage.LAND, Stage.ADOPT), (Stage.RENEW, Stage.ADOPT)}),
    owner=Role.CUSTOMER_SUCCESS,
    priority=Priority.ONBOARDING,
    description="Welcome, training invite, check-in survey and adoption review in adopt",
)


def welcome(ctx: StepContext) -> None:
    """Day 0: a kick-off call for CS and a welcome email with the term's goals."""
    ctx.assign("kickoff-call", "Kick-off call: agree goals and success plan", due_in_days=2)
    ctx.send("onboarding_welcome")


def training(ctx: StepContext) -> None:
    """Day 3: invite the team to training."""
    ctx.send("onboarding_training")


def check_in(ctx: StepContext) -> None:
    """Day 14: ask how it goes, with a survey link."""
    ctx.send("onboarding_checkin")


def adoption_review(ctx: StepContext) -> None:
    """Day 30: customer success reviews adoption against the goals."""
    pending = [g.key for g in ctx.account.goals if not g.achieved] or ["activation"]
    ctx.assign("adoption-review", f"Adoption review: {', '.join(pending)} still open",
               due_in_days=5, details={"pending_goals": pending})


STEPS = [
    Step("day-0", welcome, day=0),
    Step("day-3", training, day=3),
    Step("day-14", check_in, day=14),
    Step("day-30", adoption_review, day=30),
]


def should_stop(account: Account, signal: SignalInfo, step: Step) -> str | None:
    """Every step is skipped once the account has left adopt."""
    if account.stage is not Stage.ADOPT:
        return f"account left adopt (now {account.stage.value})"
    return None


@flow(name="onboarding", flow_run_name=run_namer("onboarding", STEPS[0].name), log_prints=True)
def onboarding(account_id: str, signal_id: str, step: str = "start") -> str:
    """Onboard an account that entered adopt, one step per run."""
    return run_playbook(PLAYBOOK, STEPS, should_stop, account_id, signal_id, step)


FLOW = onboarding
