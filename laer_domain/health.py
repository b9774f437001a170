"""Health score: a weighted mean of usage, support and billing components."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal
from typing import Literal

from laer_domain.model import Account
from laer_domain.policy import Policy

Band = Literal["green", "yellow", "red"]


def _clamp(value: int) -> int:
    return max(0, min(100, value))


def usage_component(account: Account, policy: Policy) -> int:
    """Mean active users of the latest week against the activation target, 0..100."""
    daily = account.daily_active_users
    if not daily:
        return policy.health_usage_unknown
    # the keys are date.isoformat() strings, which order as their dates do
    first = (date.fromisoformat(max(daily)) - timedelta(days=6)).isoformat()
    counts = [c for d, c in daily.items() if d >= first]
    target = policy.activation_share * account.term.seats
    if target <= 0:
        return 100
    mean = Decimal(sum(counts)) / len(counts)
    return _clamp(int((mean * 100 / target).to_integral_value(ROUND_FLOOR)))


def support_component(account: Account, policy: Policy, now: datetime) -> int:
    """100 minus penalties for open tickets, recent escalations and detractor surveys."""
    penalty = sum(policy.ticket_penalty(p) for p in account.open_tickets.values())
    window_start = now - timedelta(days=policy.escalation_window_days)
    recent = [e for e in account.escalations if window_start < e.at <= now]
    penalty += len(recent) * policy.health_escalation_penalty
    relevance = now - timedelta(days=policy.health_survey_relevance_days)
    for kind, survey in account.surveys.items():
        limit = policy.nps_detractor_max if kind == "nps" else policy.csat_detractor_max
        if survey.score <= limit and relevance < survey.at <= now:
            penalty += policy.health_detractor_penalty
    return _clamp(100 - penalty)


def billing_component(account: Account, policy: Policy) -> int:
    """100 minus a penalty per failed payment since the last paid invoice."""
    return _clamp(100 - account.failed_payments * policy.health_failed_payment_penalty)


def band_for(score: int, policy: Policy) -> Band:
    """Return the band of a score."""
    if score >= policy.health_green_min:
        return "green"
    if score < policy.health_red_below:
        return "red"
    return "yellow"


def compute_health(
    account: Account, policy: Policy, now: datetime
) -> tuple[int, Band, dict[str, int]]:
    """Return (score, band, components) of an account as of `now`."""
    usage = usage_component(account, policy)
    support = support_component(account, policy, now)
    billing = billing_component(account, policy)
    w_usage, w_support = policy.health_weight_usage, policy.health_weight_support
    w_billing = policy.health_weight_billing
    # summed from Decimal(0) as before: under a lower precision that rounds the first weight
    total = Decimal(0) + w_usage + w_support + w_billing
    weighted = (w_usage * usage + w_support * support + w_billing * billing) / total
    score = _clamp(int(weighted.to_integral_value(ROUND_HALF_UP)))
    return score, band_for(score, policy), {"usage": usage, "support": support,
                                            "billing": billing}
