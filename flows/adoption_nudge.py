"""Adoption nudge: point the customer at unused key features and get CS involved."""

from __future__ import annotations

from prefect import flow

from flows.kit.api import (
    Playbook,
    SignalInfo,
    Step,
    StepContext,
    coalesced_signals,
    run_namer,
    run_playbook,
)
from laer_domain.model import Account, Role, Stage
from laer_domain.outreach import Priority
from laer_domain.signals import SignalKind

PLAYBOOK = Playbook(
    name="adoption_nudge",
    triggers=frozenset({SignalKind.FeatureUnderused, SignalKind.AdoptionStalled}),
    owner=Role.CUSTOMER_SUCCESS,
    priority=Priority.ONBOARDING,
    description="Nudge an unused key feature or a stalled rollout; a task for CS",
)


def flagged_features(account: Account, signal: SignalInfo) -> list[str]:
    """Key features flagged unused at the signal's instant that are still unused now."""
    if signal.kind != SignalKind.FeatureUnderused.value:
        return []
    # sibling signals of the same sweep were coalesced into this run
    features = {str(s.details.get("feature")) for s in coalesced_signals(account.id, signal)}
    features.add(str(signal.details.get("feature")))
    live = account.went_live_at
    unused = []
    for feature in sorted(features - {"None"}):
        stat = account.feature_usage.get(feature)
        if stat is None or live is None or stat.last_used < live:
            unused.append(feature)
    return unused


def nudge(ctx: StepContext) -> None:
    """Email the contacts about the unused features (or the stall) and assign CS."""
    features = flagged_features(ctx.account, ctx.signal)
    ctx.send("adoption_nudge", roles=("admin", "champion", "buyer"),
             extra={"features": features})
    if features:
        subject = f"Adoption: {', '.join(features)} unused since go-live"
    else:
        pending = ctx.signal.details.get("pending_goals") or ["activation"]
        subject = f"Adoption stalled: {', '.join(map(str, pending))} not reached"
    ctx.assign("adoption-help", subject, due_in_days=3, details={"features": features})


STEPS = [Step("day-0", nudge)]


def should_stop(account: Account, signal: SignalInfo, step: Step) -> str | None:
    """Stop for churned accounts, a stall that resolved, or features now in use."""
    if account.stage is Stage.CHURNED:
        return "account churned"
    if signal.kind == SignalKind.AdoptionStalled.value:
        if account.stage is not Stage.ADOPT or account.outcome_achieved_at is not None:
            return "adoption no longer stalled"
    elif not flagged_features(account, signal):
        return "the features are in use now"
    return None


@flow(name="adoption_nudge", flow_run_name=run_namer("adoption_nudge", STEPS[0].name),
      log_prints=True)
def adoption_nudge(account_id: str, signal_id: str, step: str = "start") -> str:
    """Nudge an account that under-uses its key features or stalls in adopt."""
    return run_playbook(PLAYBOOK, STEPS, should_stop, account_id, signal_id, step)


FLOW = adoption_nudge
