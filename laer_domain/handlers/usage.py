"""Rules of the usage events: going live, active users, features, limits, outcomes."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

from laer_domain.events import CloudEvent, EventType
from laer_domain.lifecycle import (
    Ctx,
    Handler,
    check_outcome,
    expansion_opportunity,
    move,
    threshold,
    trigger_churn_risk,
)
from laer_domain.model import FeatureStat, Stage
from laer_domain.payloads import ActiveUsers, FeatureUsed, LimitReached, OutcomeAchieved
from laer_domain.signals import SignalKind
from laer_domain.wire import iso

MAX_FEATURES = 64


def try_adopt(ctx: Ctx, event: CloudEvent) -> None:
    """Move land -> adopt once the account is committed (paid) and functional (live)."""
    acc = ctx.account
    if acc.stage is Stage.LAND and acc.committed_at and acc.functional_at:
        details = {"committed_at": iso(acc.committed_at), "functional_at": iso(acc.functional_at)}
        move(ctx, Stage.ADOPT, event.time, "committed_and_functional", event.id, details)


def _provisioned(ctx: Ctx, event: CloudEvent) -> None:
    acc = ctx.account
    if acc.functional_at is None:
        acc.functional_at = event.time
    if acc.went_live_at is None:
        acc.went_live_at = event.time
        details = {"term": acc.term.number, "stage": acc.stage.value}
        ctx.emit(SignalKind.WentLive, event.time, "first_provisioned", (event.id,), details,
                 key=f"term{acc.term.number}")
    try_adopt(ctx, event)


def _active_users(ctx: Ctx, event: CloudEvent) -> None:
    data = event.payload(ActiveUsers)
    acc, policy = ctx.account, ctx.policy
    day = data.date.date()
    keep = max(policy.activation_window_days, policy.usage_drop_days + 1, 7)
    daily = acc.daily_active_users
    latest = max([date.fromisoformat(d) for d in daily] + [day])
    oldest = latest - timedelta(days=keep - 1)
    if day < oldest:
        return  # too old to matter for any rule
    daily[day.isoformat()] = data.count
    acc.daily_active_users = {
        d: c for d, c in sorted(daily.items()) if date.fromisoformat(d) >= oldest
    }
    _usage_drop(ctx, event, day, data.count)
    seats = acc.term.seats
    if Decimal(data.count) >= threshold(policy.expansion_usage_share, seats):
        details = {
            "date": day.isoformat(),
            "count": data.count,
            "seats": seats,
            "share": policy.expansion_usage_share,
        }
        expansion_opportunity(ctx, event.time, "usage", "seat_usage", event.id, details, hard=False)
    evaluate_activation(ctx, event)


def _usage_drop(ctx: Ctx, event: CloudEvent, day: date, count: int) -> None:
    policy = ctx.policy
    before = ctx.account.daily_active_users.get(
        (day - timedelta(days=policy.usage_drop_days)).isoformat()
    )
    if not before:
        return
    if Decimal(before - count) >= threshold(policy.usage_drop_share, before):
        details = {
            "date": day.isoformat(),
            "count": count,
            "previous_count": before,
            "drop_share": policy.usage_drop_share,
            "days": policy.usage_drop_days,
        }
        trigger_churn_risk(ctx, event.time, "usage_drop", (event.id,), details)


def evaluate_activation(ctx: Ctx, event: CloudEvent) -> None:
    """Without declared goals: reach activation on enough days of enough active seats."""
    acc, policy = ctx.account, ctx.policy
    if acc.goals or acc.activation_achieved_at is not None or not acc.daily_active_users:
        return
    latest = max(date.fromisoformat(d) for d in acc.daily_active_users)
    first = max(latest - timedelta(days=policy.activation_window_days - 1), acc.term.start.date())
    needed = threshold(policy.activation_share, acc.term.seats)
    qualifying = sorted(
        d
        for d, c in acc.daily_active_users.items()
        if date.fromisoformat(d) >= first and Decimal(c) >= needed
    )
    if len(qualifying) < policy.activation_days_required:
        return
    acc.activation_achieved_at, acc.activation_event_id = event.time, event.id
    details = {
        "goal": "activation",
        "qualifying_days": qualifying,
        "days_required": policy.activation_days_required,
        "window_days": policy.activation_window_days,
        "share": policy.activation_share,
        "seats": acc.term.seats,
    }
    ctx.emit(SignalKind.OutcomeAchieved, event.time, "activation", (event.id,), details,
             key=f"term{acc.term.number}:activation")
    check_outcome(ctx, event.time, event.id)


def _feature_used(ctx: Ctx, event: CloudEvent) -> None:
    data = event.payload(FeatureUsed)
    if data.count <= 0:
        return
    usage = ctx.account.feature_usage
    stat = usage.get(data.feature)
    if stat is None:
        usage[data.feature] = FeatureStat(
            count=data.count, first_used=event.time, last_used=event.time
        )
    else:
        usage[data.feature] = stat.model_copy(
            update={"count": stat.count + data.count, "last_used": max(stat.last_used, event.time)}
        )
    if len(usage) > MAX_FEATURES:  # forget the least recently used feature
        stale = min(usage, key=lambda f: (usage[f].last_used, f))
        del usage[stale]


def _limit_reached(ctx: Ctx, event: CloudEvent) -> None:
    data = event.payload(LimitReached)
    if data.used < data.allowed:
        return
    details = {"limit": data.limit, "used": data.used, "allowed": data.allowed}
    expansion_opportunity(
        ctx, event.time, f"limit:{data.limit}", "hard_limit", event.id, details, hard=True
    )


def _outcome(ctx: Ctx, event: CloudEvent) -> None:
    data = event.payload(OutcomeAchieved)
    goals = ctx.account.goals
    index = next((i for i, g in enumerate(goals) if g.key == data.goal), None)
    if index is None:
        return  # undeclared goals are recorded (timeline) but count for nothing
    goal = goals[index]
    if goal.value is None or data.value > goal.value:
        goal = goals[index] = goal.model_copy(update={"value": data.value})
    if goal.achieved or data.value < goal.target:
        return
    goal = goals[index] = goal.model_copy(
        update={"achieved": True, "achieved_at": event.time, "evidence_event_id": event.id}
    )
    details = {"goal": goal.key, "target": goal.target, "value": data.value}
    ctx.emit(SignalKind.OutcomeAchieved, event.time, "goal_achieved", (event.id,), details,
             key=f"term{ctx.account.term.number}:{goal.key}")
    check_outcome(ctx, event.time, event.id)


USAGE: dict[str, Handler] = {
    EventType.PROVISIONED: _provisioned,
    EventType.ACTIVE_USERS: _active_users,
    EventType.FEATURE_USED: _feature_used,
    EventType.LIMIT_REACHED: _limit_reached,
    EventType.OUTCOME_ACHIEVED: _outcome,
}
