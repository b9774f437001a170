"""Strict pydantic models for the `data` of every event type."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from laer_domain.wire import (
    Count,
    Currency,
    EmailAddress,
    EventInstant,
    Money,
    NonEmptyStr,
    Number,
    Text,
    TimeZoneName,
)


class Payload(BaseModel):
    """Base of event payloads: tolerant of unknown fields, strict about known ones."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class GoalSpec(Payload):
    """A goal declared for a term: reached when an outcome value >= target."""

    key: NonEmptyStr
    target: Number


class ContactSpec(Payload):
    """A customer contact with channel preferences and time zone."""

    email: EmailAddress  # one address: a list would reach people nobody named
    name: Text = ""
    role: Text = ""
    channels: list[NonEmptyStr] = Field(default_factory=lambda: ["email"])
    timezone: TimeZoneName = "UTC"
    opted_out: bool = False


class _Term(Payload):
    term_start: EventInstant
    term_end: EventInstant

    @model_validator(mode="after")
    def _ordered(self) -> _Term:
        if self.term_end <= self.term_start:
            raise ValueError("term_end must be after term_start")
        return self


class SubscriptionStarted(_Term):
    """laer.billing.subscription_started: a new term lands (or wins back) an account."""

    plan: NonEmptyStr
    seats: Count
    mrr: Money
    currency: Currency
    goals: list[GoalSpec] | None = None
    contacts: list[ContactSpec] = Field(default_factory=list)


class InvoicePaid(Payload):
    """laer.billing.invoice_paid: the customer paid (commits on the first one)."""

    invoice_id: NonEmptyStr
    amount: Money
    currency: Currency


class PaymentFailed(Payload):
    """laer.billing.payment_failed: a charge attempt failed."""

    invoice_id: NonEmptyStr
    amount: Money
    currency: Currency
    attempt: Count


class PlanChanged(Payload):
    """laer.billing.plan_changed: plan, seats or price changed mid-term."""

    plan: NonEmptyStr
    seats: Count
    mrr: Money


class SubscriptionRenewed(_Term):
    """laer.billing.subscription_renewed: a new term with optional new goals."""

    plan: NonEmptyStr
    seats: Count
    mrr: Money
    currency: Currency | None = None
    goals: list[GoalSpec] | None = None


class SubscriptionCanceled(Payload):
    """laer.billing.subscription_canceled: churn at effective_at."""

    effective_at: EventInstant
    reason: Text


class Provisioned(Payload):
    """laer.usage.provisioned: the solution is live and functional."""


class ActiveUsers(Payload):
    """laer.usage.active_users: distinct active users on a calendar date (UTC)."""

    date: EventInstant
    count: Count


class FeatureUsed(Payload):
    """laer.usage.feature_used: a feature was used `count` times."""

    feature: NonEmptyStr
    count: Count


class LimitReached(Payload):
    """laer.usage.limit_reached: usage of a plan limit; hard when used >= allowed."""

    limit: NonEmptyStr
    used: Count
    allowed: Count


class OutcomeAchieved(Payload):
    """laer.usage.outcome_achieved: a measured value for a goal."""

    goal: NonEmptyStr
    value: Number


class TicketOpened(Payload):
    """laer.support.ticket_opened: a support ticket was opened."""

    ticket_id: NonEmptyStr
    priority: Literal["low", "normal", "high", "urgent"]


class TicketEscalated(Payload):
    """laer.support.ticket_escalated: a ticket was escalated."""

    ticket_id: NonEmptyStr


class TicketResolved(Payload):
    """laer.support.ticket_resolved: a ticket was resolved."""

    ticket_id: NonEmptyStr


class SurveyResponse(Payload):
    """laer.support.survey_response: NPS (0..10) or CSAT (1..5) score."""

    kind: Literal["nps", "csat"]
    score: Count

    @model_validator(mode="after")
    def _in_scale(self) -> SurveyResponse:
        low, high = (0, 10) if self.kind == "nps" else (1, 5)
        if not low <= self.score <= high:
            raise ValueError(f"{self.kind} score must be within {low}..{high}")
        return self
