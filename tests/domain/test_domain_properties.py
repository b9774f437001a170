"""Property tests: legal transitions, idempotence and interleaving independence."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from domain_sim import T0
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from laer_domain import (
    ALLOWED_TRANSITIONS,
    Account,
    CloudEvent,
    InMemoryRepository,
    LifecycleService,
    Policy,
    Signal,
    make_event,
    parse_event,
)

POLICY = Policy()
ACCOUNTS = ("acc-1", "acc-2", "acc-3")
SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


Maker = Callable[[datetime], dict[str, Any]]


def _iso(at: datetime) -> str:
    return at.isoformat()


def _const(data: dict[str, Any]) -> st.SearchStrategy[Maker]:
    return st.just(lambda at: data)


def _term_maker(days: int, seats: int, goals: list[dict[str, Any]] | None) -> Maker:
    def make(at: datetime) -> dict[str, Any]:
        term = {
            "term_start": _iso(at),
            "term_end": _iso(at + timedelta(days=days)),
            "plan": "pro",
            "seats": seats,
            "mrr": "100.00",
            "currency": "EUR",
        }
        return term if goals is None else {**term, "goals": goals}

    return make


_GOAL = st.fixed_dictionaries({"key": st.sampled_from(["g1", "g2"]), "target": st.integers(1, 10)})
_TERM = st.builds(
    _term_maker,
    st.sampled_from([45, 120, 200, 365]),
    st.integers(1, 20),
    st.none() | st.lists(_GOAL, max_size=2),
)
_MONEY = {"invoice_id": "inv", "amount": "10", "currency": "EUR"}
_TICKET = st.sampled_from(["t1", "t2", "t3"])


def _maps(
    fn: Callable[..., dict[str, Any]], *args: st.SearchStrategy[Any]
) -> st.SearchStrategy[Maker]:
    """Strategy of makers that ignore the event time."""
    return st.builds(lambda *vals: lambda at: fn(*vals), *args)


# strategies are built once: rebuilding them per draw defeats hypothesis' caches
DATA: dict[str, st.SearchStrategy[Maker]] = {
    "billing.subscription_started": _TERM,
    "billing.subscription_renewed": _TERM,
    "billing.invoice_paid": _const(_MONEY),
    "billing.payment_failed": _maps(lambda n: {**_MONEY, "attempt": n}, st.integers(1, 3)),
    "billing.plan_changed": _maps(
        lambda n: {"plan": "team", "seats": n, "mrr": 50}, st.integers(1, 20)
    ),
    "billing.subscription_canceled": st.builds(
        lambda d: lambda at: {"effective_at": _iso(at + timedelta(days=d)), "reason": "r"},
        st.integers(-10, 60),
    ),
    "usage.provisioned": _const({}),
    "usage.active_users": st.builds(
        lambda back, n: (
            lambda at: {"date": (at - timedelta(days=back)).date().isoformat(), "count": n}
        ),
        st.integers(0, 3),
        st.integers(0, 25),
    ),
    "usage.feature_used": _maps(
        lambda f, n: {"feature": f, "count": n},
        st.sampled_from(["reports", "integrations", "other"]),
        st.integers(0, 3),
    ),
    "usage.limit_reached": _maps(
        lambda lim, used, allowed: {"limit": lim, "used": used, "allowed": allowed},
        st.sampled_from(["api", "storage"]),
        st.integers(0, 12),
        st.integers(1, 10),
    ),
    "usage.outcome_achieved": _maps(
        lambda g, v: {"goal": g, "value": v},
        st.sampled_from(["g1", "g2", "g3"]),
        st.integers(0, 12),
    ),
    "support.ticket_opened": _maps(
        lambda t, p: {"ticket_id": t, "priority": p},
        _TICKET,
        st.sampled_from(["low", "normal", "high", "urgent"]),
    ),
    "support.ticket_escalated": _maps(lambda t: {"ticket_id": t}, _TICKET),
    "support.ticket_resolved": _maps(lambda t: {"ticket_id": t}, _TICKET),
    "support.survey_response": st.one_of(
        _maps(lambda n: {"kind": "nps", "score": n}, st.integers(0, 10)),
        _maps(lambda n: {"kind": "csat", "score": n}, st.integers(1, 5)),
    ),
}
_GAP = st.integers(-48, 24 * 40)


KINDS = [
    "billing.subscription_started",
    "billing.invoice_paid",
    "billing.payment_failed",
    "billing.plan_changed",
    "billing.subscription_renewed",
    "billing.subscription_canceled",
    "usage.provisioned",
    "usage.active_users",
    "usage.feature_used",
    "usage.limit_reached",
    "usage.outcome_achieved",
    "support.ticket_opened",
    "support.ticket_escalated",
    "support.ticket_resolved",
    "support.survey_response",
]
# landing-related events more often, so accounts actually move through stages
_KIND = st.sampled_from(
    KINDS + ["billing.invoice_paid", "usage.provisioned", "usage.active_users"] * 2
)


@st.composite
def account_events(draw: st.DrawFn, account: str) -> list[CloudEvent]:
    """A sequence of valid events for one account, times mostly moving forward."""
    at = T0
    events: list[CloudEvent] = []
    count = draw(st.integers(1, 20))
    start_at = draw(st.integers(0, min(3, count - 1)))  # some events may come before landing
    for index in range(count):
        at = at + timedelta(hours=draw(_GAP))
        kind = "billing.subscription_started" if index == start_at else draw(_KIND)
        data = draw(DATA[kind])(at)
        wire = make_event(f"laer.{kind}", account, at, data, id=f"{account}-{index}")
        events.append(parse_event(wire))
    return events


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, list[CloudEvent]]:
    """Events for 1 to 3 accounts."""
    n = draw(st.integers(1, 3))
    return {account: draw(account_events(account)) for account in ACCOUNTS[:n]}


def run(events: list[CloudEvent], sweep_at: datetime | None = None) -> InMemoryRepository:
    """Feed events to a fresh service; optionally sweep at the end."""
    repo = InMemoryRepository()
    service = LifecycleService(repo, POLICY)
    for event in events:
        service.handle(event)
    if sweep_at is not None:
        service.sweep(sweep_at)
    return repo


def states(repo: InMemoryRepository) -> dict[str, Account]:
    """Return the final account states."""
    return dict(repo.accounts)


def signals_by_account(repo: InMemoryRepository) -> dict[str, list[Signal]]:
    """Return the recorded signals grouped by account, in order."""
    out: dict[str, list[Signal]] = {}
    for signal in repo.signals:
        out.setdefault(signal.account_id, []).append(signal)
    return out


def in_order(scenario: dict[str, list[CloudEvent]]) -> list[CloudEvent]:
    """All events, account after account."""
    return [e for events in scenario.values() for e in events]


@SETTINGS
@given(scenarios())
def test_no_illegal_transition(scenario: dict[str, list[CloudEvent]]) -> None:
    repo = run(in_order(scenario), sweep_at=T0 + timedelta(days=3000))
    for account_id, account in repo.accounts.items():
        changes = [c for c in repo.stage_changes if c.account_id == account_id]
        assert changes[0].from_stage is None
        for previous, change in zip(changes, changes[1:], strict=False):
            assert change.from_stage is previous.to_stage
        for change in changes:
            assert (change.from_stage, change.to_stage) in ALLOWED_TRANSITIONS
        assert changes[-1].to_stage is account.stage
        assert Account.model_validate(account.model_dump(mode="json")) == account
    ids = [s.id for s in repo.signals]
    assert len(ids) == len(set(ids))


@SETTINGS
@given(scenarios())
def test_duplicates_change_nothing(scenario: dict[str, list[CloudEvent]]) -> None:
    events = in_order(scenario)
    once = run(events)
    twice = run(events + events)
    doubled = run([e for event in events for e in (event, event)])
    assert states(once) == states(twice) == states(doubled)
    assert once.signals == twice.signals == doubled.signals
    assert once.stage_changes == twice.stage_changes


@SETTINGS
@given(scenarios(), st.data())
def test_interleaving_across_accounts(
    scenario: dict[str, list[CloudEvent]], data: st.DataObject
) -> None:
    labels = [account for account, events in scenario.items() for _ in events]
    order = data.draw(st.permutations(labels))
    cursors = {account: iter(events) for account, events in scenario.items()}
    interleaved = [next(cursors[account]) for account in order]
    one, other = run(in_order(scenario)), run(interleaved)
    assert states(one) == states(other)
    assert signals_by_account(one) == signals_by_account(other)
