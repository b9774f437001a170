"""Time-based rules, applied in order at the instant each falls due."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from laer_domain.lifecycle import Ctx, move, refresh_health
from laer_domain.model import Stage
from laer_domain.signals import SignalKind
from laer_domain.wire import iso

Rule = Callable[[Ctx, datetime], None]
MAX_STEPS = 1000  # each step retires its rule; this only guards against a bug


def _window_opens(ctx: Ctx) -> datetime:
    return ctx.account.term.end - timedelta(days=ctx.policy.renewal_window_days)


def _renewal_window_signal(ctx: Ctx, at: datetime) -> None:
    acc = ctx.account
    ctx.mark("renewal_window")
    details = {
        "term_end": acc.term.end,
        "window_days": ctx.policy.renewal_window_days,
        "stage": acc.stage.value,
    }
    ctx.emit(SignalKind.RenewalWindowOpened, at, "renewal_window", (), details,
             key=f"term{acc.term.number}")
    if acc.stage is Stage.LAND and ctx.mark("renewal_at_risk"):
        ctx.emit(
            SignalKind.RenewalAtRisk, at, "still_in_land", (), details, key=f"term{acc.term.number}"
        )


def _renewal_window_move(ctx: Ctx, at: datetime) -> None:
    details = {"term_end": iso(ctx.account.term.end), "window_days": ctx.policy.renewal_window_days}
    move(ctx, Stage.RENEW, at, "renewal_window", None, details)


def _cancellation(ctx: Ctx, at: datetime) -> None:
    cancel = ctx.account.cancellation
    assert cancel is not None
    details = {"effective_at": iso(cancel.effective_at), "cancel_reason": cancel.reason}
    move(ctx, Stage.CHURNED, at, "canceled", cancel.event_id, details)


def _lapse(ctx: Ctx, at: datetime) -> None:
    details = {"term_end": iso(ctx.account.term.end), "grace_days": ctx.policy.grace_days}
    move(ctx, Stage.CHURNED, at, "term_lapsed", None, details)


def _adoption_stalled(ctx: Ctx, at: datetime) -> None:
    acc = ctx.account
    ctx.mark("adoption_stalled")
    pending = [g.key for g in acc.goals if not g.achieved] or ["activation"]
    details = {
        "adopt_since": acc.stage_since,
        "stall_days": ctx.policy.adoption_stall_days,
        "pending_goals": pending,
    }
    ctx.emit(SignalKind.AdoptionStalled, at, "adoption_stalled", (), details,
             key=f"adopt#{acc.transitions}")


def _feature_underused(ctx: Ctx, at: datetime) -> None:
    acc = ctx.account
    ctx.mark("feature_underused")
    live = acc.went_live_at
    assert live is not None
    for feature in ctx.policy.key_features:
        stat = acc.feature_usage.get(feature)
        if stat is not None and stat.last_used >= live:
            continue
        details = {
            "feature": feature,
            "went_live_at": live,
            "days": ctx.policy.feature_underused_days,
            "last_used": stat.last_used if stat else None,
        }
        ctx.emit(SignalKind.FeatureUnderused, at, "feature_underused", (), details,
                 key=f"term{acc.term.number}:{feature}")


def _churn_risk_expiry(ctx: Ctx, at: datetime) -> None:
    refresh_health(ctx, at)  # a red band is a standing trigger and keeps the risk open
    risk = ctx.account.churn_risk
    quiet = timedelta(days=ctx.policy.churn_risk_quiet_days)
    if risk is not None and risk.last_trigger_at + quiet <= at:
        ctx.account.churn_risk = None


def _due(ctx: Ctx) -> list[tuple[datetime, int, Rule]]:
    acc, policy = ctx.account, ctx.policy
    if not acc.is_live:
        return []
    due: list[tuple[datetime, int, Rule]] = []
    window = _window_opens(ctx)
    if not acc.has_fired("renewal_window"):
        due.append((window, 0, _renewal_window_signal))
    if acc.stage in (Stage.ADOPT, Stage.EXPAND):
        due.append((max(window, acc.stage_since), 1, _renewal_window_move))
    if acc.cancellation is not None:
        due.append((acc.cancellation.effective_at, 2, _cancellation))
    due.append((acc.term.end + timedelta(days=policy.grace_days), 3, _lapse))
    if (
        acc.stage is Stage.ADOPT
        and acc.outcome_achieved_at is None
        and not acc.has_fired("adoption_stalled")
    ):
        due.append(
            (acc.stage_since + timedelta(days=policy.adoption_stall_days), 4, _adoption_stalled)
        )
    if acc.went_live_at is not None and not acc.has_fired("feature_underused"):
        due.append(
            (
                acc.went_live_at + timedelta(days=policy.feature_underused_days),
                5,
                _feature_underused,
            )
        )
    if acc.churn_risk is not None:
        quiet = timedelta(days=policy.churn_risk_quiet_days)
        due.append((acc.churn_risk.last_trigger_at + quiet, 6, _churn_risk_expiry))
    return due


def advance(ctx: Ctx, until: datetime) -> None:
    """Apply every time-based rule due at or before `until`, earliest first."""
    for _ in range(MAX_STEPS):
        due = [d for d in _due(ctx) if d[0] <= until]
        if not due:
            return
        instant, _, rule = min(due, key=lambda d: (d[0], d[1]))
        rule(ctx, max(instant, ctx.account.landed_at))  # nothing is due before landing
    raise RuntimeError("time-based rules did not settle")  # pragma: no cover
