"""Pure lifecycle rules: apply an event or a sweep instant to an account."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

from laer_domain.events import CloudEvent, EventType
from laer_domain.handlers import HANDLERS, goals_from
from laer_domain.lifecycle import Ctx, move, refresh_health
from laer_domain.model import Account, Role, Stage, Term, owner_for
from laer_domain.payloads import SubscriptionStarted
from laer_domain.policy import Policy
from laer_domain.signals import HealthChange, Signal, SignalKind, StageChange
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
        new.emit(
            SignalKind.AccountLanded,
            event.time,
            "subscription_started",
            (event.id,),
            details,
            key="land#1",
        )
        return new
    ctx.account = _fresh_account(event, ctx.account)  # win-back: a clean slate, still churned
    ctx.account.owner = owner_for(Stage.CHURNED)
    move(ctx, Stage.LAND, event.time, "win_back", event.id, {"wins_back": ctx.account.wins_back})
    ctx.account.landed_at = ctx.account.stage_since
    return ctx


_IMMUTABLE = (str, int, float, bool, Decimal, datetime, date, type(None))
_Copier = Callable[[Any], Any]


def _clone_value(value: Any) -> Any:
    """Generic deep copy of JSON-like state (fallback for unexpected annotations)."""
    if isinstance(value, _IMMUTABLE):  # also StrEnum members
        return value
    if isinstance(value, BaseModel):
        return _model_copier(type(value))(value)
    if isinstance(value, list | tuple):
        return [_clone_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _clone_value(v) for k, v in value.items()}
    raise TypeError(f"cannot copy {type(value).__name__} state")  # pragma: no cover


def _optional(f: _Copier) -> _Copier:
    return lambda v: None if v is None else f(v)


def _list_of(f: _Copier) -> _Copier:
    return lambda v: [f(x) for x in v]


def _dict_of(f: _Copier) -> _Copier:
    return lambda v: {k: f(x) for k, x in v.items()}


def _annotation_copier(annotation: Any) -> _Copier | None:
    """How to copy a value of this field type; None when values are immutable."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _annotation_copier(get_args(annotation)[0])
    if origin is Literal:
        return None
    if origin in (Union, UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            inner = _annotation_copier(args[0])
            if inner is None:
                return None
            return _optional(inner)
        if all(_annotation_copier(a) is None for a in args):
            return None
        return _clone_value
    if origin is list:
        (item,) = get_args(annotation) or (Any,)
        f = _annotation_copier(item)
        return list if f is None else _list_of(f)
    if origin is dict:
        _, item = get_args(annotation) or (Any, Any)
        f = _annotation_copier(item)
        return dict if f is None else _dict_of(f)
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return _model_copier(annotation)
        if issubclass(annotation, _IMMUTABLE):  # str, int, Decimal, datetime, StrEnums
            return None
    return _clone_value


_MODEL_COPIERS: dict[type[BaseModel], _Copier] = {}


def _model_copier(cls: type[BaseModel]) -> _Copier:
    """A deep copier for a state model: immutable fields shared, containers copied."""
    found = _MODEL_COPIERS.get(cls)
    if found is not None:
        return found
    fields_set = frozenset(cls.model_fields)  # as after a dump/validate round trip
    plain = not cls.__private_attributes__ and cls.model_config.get("extra") != "allow"
    nested: list[tuple[str, _Copier]] = []

    def copy(model: Any) -> Any:
        if type(model) is not cls:
            return _clone_value(model)
        values = dict(model.__dict__)
        for name, f in nested:
            values[name] = f(values[name])
        clone = object.__new__(cls)
        object.__setattr__(clone, "__dict__", values)
        object.__setattr__(clone, "__pydantic_fields_set__", set(fields_set))
        if plain:
            object.__setattr__(clone, "__pydantic_extra__", None)
            object.__setattr__(clone, "__pydantic_private__", None)
        else:  # pragma: no cover - no such state model today
            extra, private = model.__pydantic_extra__, model.__pydantic_private__
            object.__setattr__(clone, "__pydantic_extra__",
                               None if extra is None else _clone_value(extra))
            object.__setattr__(clone, "__pydantic_private__",
                               None if private is None else _clone_value(private))
        return clone

    _MODEL_COPIERS[cls] = copy  # before the fields: a model may nest itself
    for name, info in cls.model_fields.items():
        f = _annotation_copier(info.annotation)
        if f is not None:
            nested.append((name, f))
    return copy


def copy_account(account: Account) -> Account:
    """A deep copy of an account (state models are plain data; leaves are immutable).

    Equal to the former `Account.model_validate(account.model_dump())` round trip for every
    state the rules produce, at a fraction of the cost.
    """
    copied: Account = _model_copier(Account)(account)
    return copied


_copy = copy_account


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
    return apply_event_in_place(None if account is None else _copy(account), event, policy)


def apply_event_in_place(working: Account | None, event: CloudEvent, policy: Policy) -> Outcome:
    """`apply_event` on a working copy the caller owns: `working` is changed, not copied.

    The outcome's account is `working` itself, or a new account when the event lands or wins
    it back. Applying several events of one account this way, each to the previous outcome's
    account, gives the states and records `apply_event` gives one event at a time. If this
    raises, `working` may be half-applied and must be thrown away (see
    `LifecycleService.handle_batch`, which rebuilds it).
    """
    started = event.type == EventType.SUBSCRIPTION_STARTED
    if working is None:
        if not started:
            raise AccountNotLanded(event.subject)
        ctx = _land(None, event, policy)
    else:
        ctx = Ctx(working, policy)
        advance(ctx, event.time)
        if not ctx.account.is_live:
            if not started:  # churned: recorded by the caller, no state, no signals
                return _finish(ctx, event.time)
            ctx = _land(ctx, event, policy)
        else:
            ctx.account.last_event_at = max(ctx.account.last_event_at or event.time, event.time)
            HANDLERS[event.type](ctx, event)
    refresh_health(ctx, max(event.time, ctx.account.clock), event.id)
    advance(ctx, event.time)
    return _finish(ctx, event.time)


def sweep(account: Account, at: datetime, policy: Policy) -> Outcome:
    """Apply every time-based rule due at or before `at` (the daily sweep)."""
    ctx = Ctx(_copy(account), policy)
    advance(ctx, at)
    refresh_health(ctx, max(at, ctx.account.clock))
    advance(ctx, at)
    return _finish(ctx, at)
