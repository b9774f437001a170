"""Rules of the billing events: terms, invoices, payments, cancellations."""

from __future__ import annotations

from laer_domain.events import CloudEvent, EventType
from laer_domain.handlers.usage import evaluate_activation, try_adopt
from laer_domain.lifecycle import Ctx, Handler, move, trigger_churn_risk
from laer_domain.model import Cancellation, Goal, Stage, Term
from laer_domain.payloads import (
    GoalSpec,
    InvoicePaid,
    PaymentFailed,
    PlanChanged,
    SubscriptionCanceled,
    SubscriptionRenewed,
)
from laer_domain.signals import SignalKind

MAX_FAILED_PAYMENTS = 100


def goals_from(specs: list[GoalSpec] | None) -> list[Goal]:
    """Return the goals of a new term (last spec wins per key)."""
    by_key = {spec.key: Goal(key=spec.key, target=spec.target) for spec in specs or []}
    return list(by_key.values())


def _ignore(ctx: Ctx, event: CloudEvent) -> None:
    """A subscription_started for a live account changes nothing (not a win-back)."""


def _invoice_paid(ctx: Ctx, event: CloudEvent) -> None:
    event.payload(InvoicePaid)
    acc = ctx.account
    acc.failed_payments = 0
    if acc.committed_at is None:
        acc.committed_at = event.time
    try_adopt(ctx, event)


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
    evaluate_activation(ctx, event)


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
    ctx.emit(SignalKind.Renewed, event.time, "subscription_renewed", (event.id,), details,
             key=f"term{acc.term.number}")


def _canceled(ctx: Ctx, event: CloudEvent) -> None:
    data = event.payload(SubscriptionCanceled)
    ctx.account.cancellation = Cancellation(
        effective_at=data.effective_at, reason=data.reason, event_id=event.id
    )


BILLING: dict[str, Handler] = {
    EventType.SUBSCRIPTION_STARTED: _ignore,
    EventType.INVOICE_PAID: _invoice_paid,
    EventType.PAYMENT_FAILED: _payment_failed,
    EventType.PLAN_CHANGED: _plan_changed,
    EventType.SUBSCRIPTION_RENEWED: _renewed,
    EventType.SUBSCRIPTION_CANCELED: _canceled,
}
