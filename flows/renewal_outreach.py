"""Renewal outreach: value report at T-90, a touch at T-60, a call task at T-30."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from prefect import flow

from flows.kit.api import Playbook, SignalInfo, Step, StepContext, run_namer, run_playbook
from laer_domain.model import Account, Role, Stage
from laer_domain.outreach import Priority
from laer_domain.signals import SignalKind

PLAYBOOK = Playbook(
    name="renewal_outreach",
    triggers=frozenset({SignalKind.RenewalWindowOpened}),
    owner=Role.RENEWAL_MANAGER,
    priority=Priority.RENEWAL,
    description="Value report at T-90, touch at T-60, call task at T-30; escalates at risk",
)


def at_risk(account: Account) -> str | None:
    """Why the renewal is at risk now (open churn risk or red health), if it is."""
    if account.churn_risk is not None:
        return "churn risk open: " + ", ".join(account.churn_risk.rules)
    if account.health is not None and account.health.band == "red":
        return f"health red ({account.health.score})"
    return None


def escalate(ctx: StepContext, why: str) -> None:
    """One escalation task per account and term, whichever run notices the risk first."""
    term = ctx.account.term
    ctx.assign("escalation", f"Renewal at risk: {why}", role=Role.RENEWAL_MANAGER,
               due_in_days=1, key=f"renewal:{ctx.account.id}:term{term.number}:escalation",
               details={"why": why, "term_end": term.end.isoformat()})


def _check_risk(ctx: StepContext) -> None:
    why = at_risk(ctx.account)
    if why:
        escalate(ctx, why)


def value_report(ctx: StepContext) -> None:
    """T-90: send the buyer a value report of the ending term."""
    ctx.send("renewal_value_report", roles=("buyer",))
    _check_risk(ctx)


def touch(ctx: StepContext) -> None:
    """T-60: ask the buyer to plan the next term."""
    ctx.send("renewal_touch", roles=("buyer",))
    _check_risk(ctx)


def call_task(ctx: StepContext) -> None:
    """T-30: the renewal manager calls the buyer."""
    ctx.assign("renewal-call", f"Renewal call: term ends {ctx.account.term.end:%Y-%m-%d}",
               due_in_days=3)
    _check_risk(ctx)


def _before_end(days: int) -> Callable[[Account, SignalInfo], datetime]:
    def due(account: Account, signal: SignalInfo) -> datetime:
        return account.term.end - timedelta(days=days)

    return due


STEPS = [
    Step("t-90", value_report),
    Step("t-60", touch, due=_before_end(60)),
    Step("t-30", call_task, due=_before_end(30)),
]


def term_end_of(signal: SignalInfo) -> datetime | None:
    """The term end the signal was raised for."""
    raw = signal.details.get("term_end")
    return datetime.fromisoformat(str(raw).replace("Z", "+00:00")) if raw else None


def should_stop(account: Account, signal: SignalInfo, step: Step) -> str | None:
    """Stop once the account renewed (a new term) or churned."""
    if account.stage is Stage.CHURNED:
        return "account churned"
    end = term_end_of(signal)
    if end is not None and account.term.end != end:
        return f"renewed: the term now ends {account.term.end:%Y-%m-%d}"
    return None


@flow(name="renewal_outreach", flow_run_name=run_namer("renewal_outreach", STEPS[0].name),
      log_prints=True)
def renewal_outreach(account_id: str, signal_id: str, step: str = "start") -> str:
    """Work an open renewal window from T-90 to T-30."""
    return run_playbook(PLAYBOOK, STEPS, should_stop, account_id, signal_id, step)


FLOW = renewal_outreach
