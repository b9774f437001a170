"""Renewal escalation: a renewal at risk goes to the renewal manager at once.

Its own playbook (not a step of renewal_outreach) so that a risk raised while the outreach
waits for T-60 is not coalesced into that open run and left until its next step.
"""

from __future__ import annotations

from prefect import flow

from flows.kit.api import Playbook, SignalInfo, Step, StepContext, run_namer, run_playbook
from flows.renewal_outreach import at_risk, escalate, term_end_of
from laer_domain.model import Account, Role, Stage
from laer_domain.outreach import Priority
from laer_domain.signals import SignalKind

PLAYBOOK = Playbook(
    name="renewal_escalation",
    triggers=frozenset({SignalKind.RenewalAtRisk}),
    owner=Role.RENEWAL_MANAGER,
    priority=Priority.RENEWAL,
    description="Escalate a renewal at risk to the renewal manager (one task per term)",
)


def escalation(ctx: StepContext) -> None:
    """Assign the escalation task, with the risk as the signal and the account show it."""
    why = at_risk(ctx.account) or f"{ctx.signal.evidence.get('rule')}"
    escalate(ctx, why)


STEPS = [Step("escalation", escalation)]


def should_stop(account: Account, signal: SignalInfo, step: Step) -> str | None:
    """Nothing to escalate for a churned or renewed account."""
    if account.stage is Stage.CHURNED:
        return "account churned"
    end = term_end_of(signal)
    if end is not None and account.term.end != end:
        return "renewed meanwhile"
    return None


@flow(name="renewal_escalation", flow_run_name=run_namer("renewal_escalation", "escalation"),
      log_prints=True)
def renewal_escalation(account_id: str, signal_id: str, step: str = "start") -> str:
    """Escalate a renewal at risk."""
    return run_playbook(PLAYBOOK, STEPS, should_stop, account_id, signal_id, step)


FLOW = renewal_escalation
