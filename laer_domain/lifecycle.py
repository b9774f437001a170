"""Shared rule steps: transitions, signal raising, churn risk, health, outcomes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from laer_domain.events import CloudEvent
from laer_domain.health import compute_health
from laer_domain.model import (
    ALLOWED_TRANSITIONS,
    Account,
    ChurnRisk,
    Health,
    HeldOpportunity,
    Stage,
    owner_for,
)
from laer_domain.policy import Policy
from laer_domain.signals import (
    Evidence,
    HealthChange,
    RaisedBy,
    Signal,
    SignalKind,
    StageChange,
    signal_id,
)
from laer_domain.wire import iso, jsonable

MAX_LIMIT_MARKERS = 32  # distinct limit names remembered per term
MAX_RISK_RULES = 10
LIMIT_PREFIX = "expansion:limit:"


class IllegalTransition(AssertionError):
    """A rule tried a transition outside the allowed table (a bug, never input)."""


@dataclass
class Ctx:
    """Working copy of an account plus everything the rules produced so far."""

    account: Account
    policy: Policy
    signals: list[Signal] = field(default_factory=list)
    stage_changes: list[StageChange] = field(default_factory=list)
    health_changes: list[HealthChange] = field(default_factory=list)
    cause: RaisedBy | None = None  # what moves the clock now: the event applied, or a sweep

    def mark(self, marker: str) -> bool:
        """Set a once-only marker; False if it was already set (or the cap is hit)."""
        fired = self.account.fired
        if marker in fired:
            return False
        if marker.startswith(LIMIT_PREFIX):
            if sum(m.startswith(LIMIT_PREFIX) for m in fired) >= MAX_LIMIT_MARKERS:
                return False
        fired.append(marker)
        return True

    def unmark(self, marker: str) -> None:
        """Clear a once-only marker."""
        if marker in self.account.fired:
            self.account.fired.remove(marker)

    def emit(
        self,
        kind: SignalKind,
        at: datetime,
        rule: str,
        event_ids: tuple[str, ...] = (),
        details: dict[str, Any] | None = None,
        key: str = "",
    ) -> None:
        """Raise a signal with evidence, stamped at `at`."""
        acc = self.account
        self.signals.append(
            Signal(
                id=signal_id(acc.id, kind, at, key),
                kind=kind,
                account_id=acc.id,
                at=at,
                stage=acc.stage,
                evidence=Evidence(rule=rule, event_ids=event_ids, details=jsonable(details or {}),
                                  raised_by=None if event_ids else self.cause),
            )
        )


Handler = Callable[[Ctx, CloudEvent], None]
"""The rule of one event type for a live account (see `laer_domain.handlers`)."""


def ids(event_id: str | None) -> tuple[str, ...]:
    """Return a one-element tuple of an optional event id."""
    return () if event_id is None else (event_id,)


def move(
    ctx: Ctx,
    to: Stage,
    at: datetime,
    reason: str,
    event_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Transition the account, raising StageChanged and the entry reactions."""
    acc = ctx.account
    frm = acc.stage
    if (frm, to) not in ALLOWED_TRANSITIONS:
        raise IllegalTransition(f"{frm} -> {to}")
    at = max(at, acc.stage_since)  # a stage never starts before the previous one
    acc.stage, acc.stage_since, acc.owner = to, at, owner_for(to)
    acc.transitions += 1
    nth = f"#{acc.transitions}"
    ctx.stage_changes.append(
        StageChange(
            account_id=acc.id, from_stage=frm, to_stage=to, at=at, reason=reason, event_id=event_id
        )
    )
    info = {"from": frm.value, "to": to.value, **(details or {})}
    ctx.emit(SignalKind.StageChanged, at, reason, ids(event_id), info, key=f"{frm}->{to}{nth}")
    if to is Stage.LAND:
        ctx.emit(SignalKind.AccountLanded, at, reason, ids(event_id), info, key="land" + nth)
    elif to is Stage.ADOPT:
        ctx.unmark("adoption_stalled")
        check_outcome(ctx, at, event_id)
    elif to is Stage.EXPAND:
        release_held(ctx, at)
    elif to is Stage.RENEW and reason != "early_renewal":  # passing through: not at risk
        check_renewal_at_risk(ctx, at, event_id)
    elif to is Stage.CHURNED:
        acc.churned_at, acc.churn_reason = at, reason
        acc.cancellation, acc.churn_risk = None, None
        acc.held_opportunities = []
        ctx.emit(SignalKind.Churned, at, reason, ids(event_id), info, key="churned" + nth)


def check_outcome(ctx: Ctx, at: datetime, event_id: str | None) -> None:
    """Note the intended outcome once reached and move adopt -> expand."""
    acc = ctx.account
    if acc.outcome_achieved_at is None:
        if acc.goals:
            reached = all(g.achieved for g in acc.goals)
        else:
            reached = acc.activation_achieved_at is not None
        if not reached:
            return
        acc.outcome_achieved_at = at
    if acc.stage is Stage.ADOPT:
        evidence = [g.evidence_event_id for g in acc.goals if g.evidence_event_id]
        if not acc.goals and acc.activation_event_id:
            evidence = [acc.activation_event_id]
        goals = [g.key for g in acc.goals] or ["activation"]
        move(
            ctx,
            Stage.EXPAND,
            at,
            "outcome_achieved",
            event_id,
            {"goals": goals, "evidence_event_ids": evidence},
        )


def release_held(ctx: Ctx, at: datetime) -> None:
    """Raise held expansion opportunities on entering expand."""
    for held in ctx.account.held_opportunities:
        details: dict[str, Any] = {**held.details, "held_since": iso(held.seen_at)}
        ctx.emit(SignalKind.ExpansionOpportunity, at, held.rule, tuple(held.event_ids), details,
                 key=f"term{ctx.account.term.number}:{held.key}")
    ctx.account.held_opportunities = []


def expansion_opportunity(
    ctx: Ctx,
    at: datetime,
    key: str,
    rule: str,
    event_id: str,
    details: dict[str, Any],
    *,
    hard: bool,
) -> None:
    """Raise an expansion opportunity, or hold it in land/adopt unless it is hard."""
    if not ctx.mark(f"expansion:{key}"):
        return
    acc = ctx.account
    if hard or acc.stage in (Stage.EXPAND, Stage.RENEW):
        ctx.emit(SignalKind.ExpansionOpportunity, at, rule, (event_id,), details,
                 key=f"term{acc.term.number}:{key}")
        return
    acc.held_opportunities.append(
        HeldOpportunity(
            key=key, rule=rule, seen_at=at, event_ids=[event_id], details=jsonable(details)
        )
    )


def trigger_churn_risk(
    ctx: Ctx, at: datetime, rule: str, event_ids: tuple[str, ...], details: dict[str, Any]
) -> None:
    """Open a churn risk (raising ChurnRiskRaised) or extend the open one."""
    acc = ctx.account
    risk = acc.churn_risk
    if risk is not None:
        rules = risk.rules if rule in risk.rules else [*risk.rules, rule][-MAX_RISK_RULES:]
        acc.churn_risk = risk.model_copy(
            update={"last_trigger_at": max(risk.last_trigger_at, at), "last_rule": rule,
                    "rules": rules}
        )
        return
    acc.churn_risk = ChurnRisk(since=at, last_trigger_at=at, last_rule=rule, rules=[rule])
    acc.risks_opened += 1
    ctx.emit(
        SignalKind.ChurnRiskRaised, at, rule, event_ids, details, key=f"{rule}#{acc.risks_opened}"
    )
    check_renewal_at_risk(ctx, at, event_ids[0] if event_ids else None)


def check_renewal_at_risk(ctx: Ctx, at: datetime, event_id: str | None) -> None:
    """Raise RenewalAtRisk once per term when renew has an open risk or red health."""
    acc = ctx.account
    if acc.stage is not Stage.RENEW:
        return
    red = acc.health is not None and acc.health.band == "red"
    if acc.churn_risk is None and not red:
        return
    if not ctx.mark("renewal_at_risk"):
        return
    rule = "open_churn_risk" if acc.churn_risk is not None else "red_health"
    details: dict[str, Any] = {
        "term_end": acc.term.end,
        "churn_risk_rules": list(acc.churn_risk.rules) if acc.churn_risk else [],
        "health_score": acc.health.score if acc.health else None,
        "health_band": acc.health.band if acc.health else None,
    }
    ctx.emit(
        SignalKind.RenewalAtRisk, at, rule, ids(event_id), details, key=f"term{acc.term.number}"
    )


def refresh_health(ctx: Ctx, at: datetime, event_id: str | None = None) -> None:
    """Recompute health; emit a HealthChange and react to red/green bands."""
    acc = ctx.account
    if not acc.is_live:
        return
    score, band, components = compute_health(acc, ctx.policy, at)
    previous = acc.health
    if previous is None or (previous.score, previous.band, previous.components) != (
        score,
        band,
        components,
    ):
        acc.health = Health(score=score, band=band, components=components, at=at)
    if previous is None or (previous.score, previous.band) != (score, band):
        ctx.health_changes.append(
            HealthChange(account_id=acc.id, at=at, score=score, band=band, components=components)
        )
    if band == "red":
        details = {"score": score, "red_below": ctx.policy.health_red_below, **components}
        trigger_churn_risk(ctx, at, "red_health", ids(event_id), details)
    elif band == "green" and previous is not None and previous.band != "green":
        acc.churn_risk = None  # health is green again: the risk is over
    check_renewal_at_risk(ctx, at, event_id)


def threshold(share: Decimal, seats: int) -> Decimal:
    """Return share x seats, exactly."""
    return share * seats
