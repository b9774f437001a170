"""Rules of the support events: tickets, escalations, surveys."""

from __future__ import annotations

from datetime import timedelta

from laer_domain.events import CloudEvent, EventType
from laer_domain.lifecycle import Ctx, Handler, trigger_churn_risk
from laer_domain.model import Escalation, Survey
from laer_domain.payloads import SurveyResponse, TicketEscalated, TicketOpened, TicketResolved

MAX_OPEN_TICKETS = 200
MAX_ESCALATIONS = 50


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


SUPPORT: dict[str, Handler] = {
    EventType.TICKET_OPENED: _ticket_opened,
    EventType.TICKET_ESCALATED: _ticket_escalated,
    EventType.TICKET_RESOLVED: _ticket_resolved,
    EventType.SURVEY_RESPONSE: _survey,
}
