"""Pure lifecycle rules: apply an event or a sweep instant to an account."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from laer_domain.events import CloudEvent, EventType
from laer_domain.handlers import HANDLERS, goals_from
from laer_domain.lifecycle import Ctx, move, refresh_health
from laer_domain.model import Account, Role, Stage, Term, copy_account, owner_for
from laer_domain.payloads import SubscriptionStarted
from laer_domain.policy import Policy
from laer_domain.signals import HealthChange, RaisedBy, Signal, SignalKind, StageChange
from laer_domain.timed import advance


@dataclass(frozen=True)
class Outcome:
    """The new account state and what applying one input produced."""

    account: Account
    signals: tuple[Signal, ...] = ()
    stage_changes: tuple[StageChange, ...] = ()
    health_changes: tuple[HealthChange, ...] = ()


class AccountNotLanded(Exception):
    """An event arrived for an account that has not landed (it must be parked)."""


def _fresh_account(event: CloudEvent, previous: Account | None) -> Account:
    data = event.payload(SubscriptionStarted)
    term = Term(
        plan=data.plan,
        seats=data.seats,
        mrr=data.mrr,
        currency=data.currency,
        start=data.term_start,
        end=data.term_end,
        number=previous.term.number + 1 if previous else 1,
    )
    return Account(
        id=event.subject,
        stage=previous.stage if previous else Stage.LAND,
        stage_since=previous.stage_since if previous else event.time,
        owner=previous.owner if previous else Role.SALES,
        landed_at=event.time,
        clock=max(event.time, previous.clock) if previous else event.time,
        wins_back=previous.wins_back + 1 if previous else 0,
        transitions=previous.transitions if previous else 1,
        risks_opened=previous.risks_opened if previous else 0,
        term=term,
        goals=goals_from(data.goals),
        contacts=list(data.contacts) or (list(previous.contacts) if previous else []),
        last_event_at=event.time,
    )


def _land(ctx: Ctx | None, event: CloudEvent, policy: Policy) -> Ctx:
    if ctx is None:  # first landing: AccountLanded only, no StageChanged
        new = Ctx(_fresh_account(event, None), policy)
        acc = new.account
        new.stage_changes.append(
            StageChange(
                account_id=acc.id,
                from_stage=None,
                to_stage=Stage.LAND,
                at=event.time,
                reason="subscription_started",
                event_id=event.id,
            )
        )
        details = {"to": Stage.LAND.value, "plan": acc.term.plan, "seats": acc.term.seats}
        new.emit(SignalKind.AccountLanded, event.time, "subscription_started", (event.id,), details,
                 key="land#1")
        return new
    ctx.account = _fresh_account(event, ctx.account)  # win-back: a clean slate, still churned
    ctx.account.owner = owner_for(Stage.CHURNED)
    move(ctx, Stage.LAND, event.time, "win_back", event.id, {"wins_back": ctx.account.wins_back})
    ctx.account.landed_at = ctx.account.stage_since
    return ctx


def _finish(ctx: Ctx, until: datetime) -> Outcome:
    ctx.account.clock = max(ctx.account.clock, until)
    return Outcome(
        account=ctx.account,
        signals=tuple(ctx.signals),
        stage_changes=tuple(ctx.stage_changes),
        health_changes=tuple(ctx.health_changes),
    )


def apply_event(account: Account | None, event: CloudEvent, policy: Policy) -> Outcome:
    """Apply due time rules, then the event, then due rules again; returns a new state."""
    return apply_event_in_place(None if account is None else copy_account(account), event, policy)


def apply_event_in_place(working: Account | None, event: CloudEvent, policy: Policy) -> Outcome:
    """`apply_event` on a working copy the caller owns: `working` is changed, not copied.

    The outcome's account is `working` itself, or a new account when the event lands or wins
    it back. Applying several events of one account this way, each to the previous outcome's
    account, gives the states and records `apply_event` gives one event at a time. If this
    raises, `working` may be half-applied and must be thrown away (see `EventBatch`, which
    rebuilds it).
    """
    started = event.type == EventType.SUBSCRIPTION_STARTED
    cause = RaisedBy.event(event.id, event.time)  # a time rule due by now: this event's time
    if working is None:
        if not started:
            raise AccountNotLanded(event.subject)
        ctx = _land(None, event, policy)
    else:
        ctx = Ctx(working, policy, cause=cause)
        advance(ctx, event.time)
        if not ctx.account.is_live:
            if not started:  # churned: recorded by the caller, no state, no signals
                return _finish(ctx, event.time)
            ctx = _land(ctx, event, policy)
        else:
            ctx.account.last_event_at = max(ctx.account.last_event_at or event.time, event.time)
            HANDLERS[event.type](ctx, event)
    ctx.cause = cause  # a fresh landing's context too
    refresh_health(ctx, max(event.time, ctx.account.clock), event.id)
    advance(ctx, event.time)
    return _finish(ctx, event.time)


def sweep(account: Account, at: datetime, policy: Policy) -> Outcome:
    """Apply every time-based rule due at or before `at` (the daily sweep)."""
    ctx = Ctx(copy_account(account), policy, cause=RaisedBy.sweep(at))
    advance(ctx, at)
    refresh_health(ctx, max(at, ctx.account.clock))
    advance(ctx, at)
    return _finish(ctx, at)
