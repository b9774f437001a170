"""The event types the domain understands, the payload model of each, their families."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel

from laer_domain.payloads import (
    ActiveUsers,
    FeatureUsed,
    InvoicePaid,
    LimitReached,
    OutcomeAchieved,
    PaymentFailed,
    PlanChanged,
    Provisioned,
    SubscriptionCanceled,
    SubscriptionRenewed,
    SubscriptionStarted,
    SurveyResponse,
    TicketEscalated,
    TicketOpened,
    TicketResolved,
)


class EventType(StrEnum):
    """The event types the domain understands."""

    SUBSCRIPTION_STARTED = "laer.billing.subscription_started"
    INVOICE_PAID = "laer.billing.invoice_paid"
    PAYMENT_FAILED = "laer.billing.payment_failed"
    PLAN_CHANGED = "laer.billing.plan_changed"
    SUBSCRIPTION_RENEWED = "laer.billing.subscription_renewed"
    SUBSCRIPTION_CANCELED = "laer.billing.subscription_canceled"
    PROVISIONED = "laer.usage.provisioned"
    ACTIVE_USERS = "laer.usage.active_users"
    FEATURE_USED = "laer.usage.feature_used"
    LIMIT_REACHED = "laer.usage.limit_reached"
    OUTCOME_ACHIEVED = "laer.usage.outcome_achieved"
    TICKET_OPENED = "laer.support.ticket_opened"
    TICKET_ESCALATED = "laer.support.ticket_escalated"
    TICKET_RESOLVED = "laer.support.ticket_resolved"
    SURVEY_RESPONSE = "laer.support.survey_response"


EVENT_DATA_MODELS: dict[str, type[BaseModel]] = {
    EventType.SUBSCRIPTION_STARTED.value: SubscriptionStarted,
    EventType.INVOICE_PAID.value: InvoicePaid,
    EventType.PAYMENT_FAILED.value: PaymentFailed,
    EventType.PLAN_CHANGED.value: PlanChanged,
    EventType.SUBSCRIPTION_RENEWED.value: SubscriptionRenewed,
    EventType.SUBSCRIPTION_CANCELED.value: SubscriptionCanceled,
    EventType.PROVISIONED.value: Provisioned,
    EventType.ACTIVE_USERS.value: ActiveUsers,
    EventType.FEATURE_USED.value: FeatureUsed,
    EventType.LIMIT_REACHED.value: LimitReached,
    EventType.OUTCOME_ACHIEVED.value: OutcomeAchieved,
    EventType.TICKET_OPENED.value: TicketOpened,
    EventType.TICKET_ESCALATED.value: TicketEscalated,
    EventType.TICKET_RESOLVED.value: TicketResolved,
    EventType.SURVEY_RESPONSE.value: SurveyResponse,
}


def event_family(event_type: str) -> str:
    """Return the topic family of an event type ("laer.usage.x" -> "usage")."""
    parts = event_type.split(".")
    return parts[1] if len(parts) >= 3 and parts[0] == "laer" else ""
