"""Win-back: after a cool-down, a churned customer gets an offer and sales a task."""

from __future__ import annotations

from datetime import datetime, timedelta

from prefect import flow

from flows.kit.api import Playbook, SignalInfo, Step, StepContext, run_namer, run_playbook
from flows.kit.settings import playbook_settings
from laer_domain.model import Account, Role, Stage
from laer_domain.outreach import Priority
from laer_domain.signals import SignalKind

PLAYBOOK = Playbook(
    name="win_back",
    triggers=frozenset({SignalKind.Churned}),
    owner=Role.SALES,
    priority=Priority.UPSELL,
    description="A late offer to a churned customer after a cool-down",
)


def cool_down(ctx: StepContext) -> None:
    """Churn day: nothing goes out; the offer waits for the cool-down."""
    days = playbook_settings().win_back_cooldown_days
    ctx.note(f"cool-down of {days:g} days before the offer")


def offer(ctx: StepContext) -> None:
    """After the cool-down: the offer to the buyer and a task for sales."""
    ctx.send("win_back_offer", roles=("buyer",))
    reason = ctx.signal.details.get("cancel_reason") or ctx.account.churn_reason or "unknown"
    ctx.assign("win-back", f"Win-back: churned ({reason}); offer sent", due_in_days=5)


def _offer_due(account: Account, signal: SignalInfo) -> datetime:
    return signal.at + timedelta(days=playbook_settings().win_back_cooldown_days)


STEPS = [Step("churned", cool_down), Step("offer", offer, due=_offer_due)]


def should_stop(account: Account, signal: SignalInfo, step: Step) -> str | None:
    """Stop once the customer came back on its own."""
    if account.stage is not Stage.CHURNED:
        return f"already won back (now {account.stage.value})"
    return None


@flow(name="win_back", flow_run_name=run_namer("win_back", STEPS[0].name), log_prints=True)
def win_back(account_id: str, signal_id: str, step: str = "start") -> str:
    """Win a churned customer back after a cool-down."""
    return run_playbook(PLAYBOOK, STEPS, should_stop, account_id, signal_id, step)


FLOW = win_back
