"""Per-event-type rules for a live account."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from decimal import Decimal

from laer_domain.events import CloudEvent, EventType
from laer_domain.lifecycle import (
    Ctx,
    check_outcome,
    expansion_opportunity,
    move,
    threshold,
    trigger_churn_risk,
)
from laer_domain.model import (
    Cancellation,
    Escalation,
    FeatureStat,
    Goal,
    Stage,
    Survey,
    Term,
)
from laer_domain.payloads import (
    ActiveUsers,
    FeatureUsed,
    GoalSpec,
    InvoicePaid,
    LimitReached,
    OutcomeAchieved,
    PaymentFailed,
    PlanChanged,
    SubscriptionCanceled,
    SubscriptionRenewed,
    SurveyResponse,
    TicketEscalated,
    TicketOpened,
    TicketResolved,
)
from laer_domain.signals import SignalKind
from laer_domain.wire import iso

Handler = Callable[[Ctx, CloudEvent], None]
MAX_OPEN_TICKETS = 200
MAX_ESCALATIONS = 50
MAX_FEATURES = 64
MAX_FAILED_PAYMENTS = 100


def goals_from(specs: list[GoalSpec] | None) -> list[Goal]:
    """Return the goals of a new term (last spec wins per key)."""
    by_key = {spec.key: Goal(key=spec.key, target=spec.target) for spec in specs or []}
    return list(by_key.values())


def _try_adopt(ctx: Ctx, event: CloudEvent) -> None:
    acc = ctx.account
    if acc.stage is Stage.LAND and acc.committed_at and acc.functional_at:
        details = {"committed_at": iso(acc.committed_at), "functional_at": iso(acc.functional_at)}
        move(ctx, Stage.ADOPT, event.time, "committed_and_functional", event.id, details)


def _invoice_paid(ctx: Ctx, event: CloudEvent) -> None:
    event.payload(InvoicePaid)
    acc = ctx.account
    acc.failed_payments = 0
    if acc.committed_at is None:
        acc.committed_at = event.time
    _try_adopt(ctx, event)


def _provisioned(ctx: Ctx, event: CloudEvent) -> None:
    acc = ctx.account
    if acc.functional_at is None:
        acc.functional_at = event.time
    if acc.went_live_at is None:
        acc.went_live_at = event.time
        details = {"term": acc.term.number, "stage": acc.stage.value}
        ctx.emit(
            SignalKind.WentLive,
            event.time,
            "first_provisioned",
            (event.id,),
            details,
            key=f"term{acc.term.number}",
        )
    _try_adopt(ctx, event)


def _payment_failed(ctx: Ctx, event: CloudEvent) -> None:
    data = event.payload(PaymentFailed)
    acc = ctx.account
    acc.failed_payments = min(acc.failed_payments + 1, MAX_FAILED_PAYMENTS)
    details = {
        "invoice_id": data.invoice_id,
        "amount": data.amount,
        "currency": data.currency,
        "attempt": data.attempt,
        "failed_payments": acc.failed_payments,
    }
    trigger_churn_risk(ctx, event.time, "payment_failed", (event.id,), details)


def _plan_changed(ctx: Ctx, event: CloudEvent) -> None:
    data = event.payload(PlanChanged)
    term = ctx.account.term
    ctx.account.term = term.model_copy(
        update={"plan": data.plan, "seats": data.seats, "mrr": data.mrr}
    )
    _evaluate_activation(ctx, event)


def _renewed(ctx: Ctx, event: CloudEvent) -> None:
    data = event.payload(SubscriptionRenewed)
    acc = ctx.account
    early = acc.stage in (Stage.ADOPT, Stage.EXPAND)
    if early:
        move(ctx, Stage.RENEW, event.time, "early_renewal", event.id)
    previous = acc.term
    acc.term = Term(
        plan=data.plan,
        seats=data.seats,
        mrr=data.mrr,
        currency=data.currency or previous.currency,
        start=data.term_start,
        end=data.term_end,
        number=previous.number + 1,
    )
    # a new term starts from scratch: no carried achievements or once-per-term markers
    acc.goals = goals_from(data.goals)
    acc.activation_achieved_at = acc.activation_event_id = acc.outcome_achieved_at = None
    acc.went_live_at = None
    acc.held_opportunities = []
    acc.fired = []
    acc.cancellation = None
    details = {
        "term": acc.term.number,
        "term_start": data.term_start,
        "term_end": data.term_end,
        "plan": data.plan,
        "seats": data.seats,
        "early": early,
    }
    if acc.stage is Stage.RENEW:
        move(ctx, Stage.ADOPT, event.time, "renewed", event.id, {"term": acc.term.number})
    ctx.emit(
        SignalKind.Renewed,
        event.time,
        "subscription_renewed",
        (event.id,),
        details,
        key=f"term{acc.term.number}",
    )


def _canceled(ctx: Ctx, event: CloudEvent) -> None:
    data = event.payload(SubscriptionCanceled)
    ctx.account.cancellation = Cancellation(
        effective_at=data.effective_at, reason=data.reason, event_id=event.id
    )


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
    _evaluate_activation(ctx, event)


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


def _evaluate_activation(ctx: Ctx, event: CloudEvent) -> None:
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
    ctx.emit(
        SignalKind.OutcomeAchieved,
        event.time,
        "activation",
        (event.id,),
        details,
        key=f"term{acc.term.number}:activation",
    )
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
    ctx.emit(
        SignalKind.OutcomeAchieved,
        event.time,
        "goal_achieved",
        (event.id,),
        details,
        key=f"term{ctx.account.term.number}:{goal.key}",
    )
    check_outcome(ctx, event.time, event.id)


def _ticket_opened(ctx: Ctx, event: CloudEvent) -> None:
    data = event.payload(TicketOpened)
    tickets = ctx.account.open_tickets
    tickets[data.ticket_id] = data.priority
    while len(tickets) > MAX_OPEN_TICKETS:
        del tickets[next(iter(tickets))]


def _ticket_resolved(ctx: Ctx, event: CloudEvent) -> None:
    ctx.account.open_tickets.pop(event.payload(TicketResolved).ticket_id, None)


def _ticket_escalated(ctx: Ctx, event: CloudEvent) -> None:
    data = event.payload(TicketEscalated)
    acc, policy = ctx.account, ctx.policy
    start = event.time - timedelta(days=policy.escalation_window_days)
    kept = [e for e in acc.escalations if e.at > start]
    kept.append(Escalation(at=event.time, ticket_id=data.ticket_id, event_id=event.id))
    acc.escalations = sorted(kept, key=lambda e: (e.at, e.event_id))[-MAX_ESCALATIONS:]
    recent = [e for e in acc.escalations if start < e.at <= event.time]
    if len(recent) >= policy.escalations_for_risk:
        details = {
            "escalations": len(recent),
            "window_days": policy.escalation_window_days,
            "threshold": policy.escalations_for_risk,
            "tickets": [e.ticket_id for e in recent],
        }
        trigger_churn_risk(
            ctx, event.time, "repeated_escalations", tuple(e.event_id for e in recent), details
        )


def _survey(ctx: Ctx, event: CloudEvent) -> None:
    data = event.payload(SurveyResponse)
    ctx.account.surveys[data.kind] = Survey(score=data.score, at=event.time, event_id=event.id)
    limit = ctx.policy.nps_detractor_max if data.kind == "nps" else ctx.policy.csat_detractor_max
    if data.score <= limit:
        details = {"kind": data.kind, "score": data.score, "detractor_max": limit}
        trigger_churn_risk(ctx, event.time, f"{data.kind}_detractor", (event.id,), details)


def _ignore(ctx: Ctx, event: CloudEvent) -> None:
    """A subscription_started for a live account changes nothing (not a win-back)."""


HANDLERS: dict[str, Handler] = {
    EventType.SUBSCRIPTION_STARTED: _ignore,
    EventType.INVOICE_PAID: _invoice_paid,
    EventType.PAYMENT_FAILED: _payment_failed,
    EventType.PLAN_CHANGED: _plan_changed,
    EventType.SUBSCRIPTION_RENEWED: _renewed,
    EventType.SUBSCRIPTION_CANCELED: _canceled,
    EventType.PROVISIONED: _provisioned,
    EventType.ACTIVE_USERS: _active_users,
    EventType.FEATURE_USED: _feature_used,
    EventType.LIMIT_REACHED: _limit_reached,
    EventType.OUTCOME_ACHIEVED: _outcome,
    EventType.TICKET_OPENED: _ticket_opened,
    EventType.TICKET_ESCALATED: _ticket_escalated,
    EventType.TICKET_RESOLVED: _ticket_resolved,
    EventType.SURVEY_RESPONSE: _survey,
}
