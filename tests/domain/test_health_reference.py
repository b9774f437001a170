"""compute_health against the implementation it replaced (date parsing per key, dicts).

Longer than 300 lines on purpose: a verbatim oracle of the former code, its account
strategies and the properties that compare against it, which nothing else uses.

`_ref_*` below is a verbatim copy of laer_domain/health.py as of commit 1ae8b3f (only the
function names are prefixed); the property tests require the new code to return the very same
(score, band, components), or to raise the same exception, for generated accounts and policies.
The day keys are what the domain writes (`date.isoformat()`), which the new code compares as
strings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal, localcontext
from typing import Any, Literal

import pytest
from domain_sim import Sim, day
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from laer_domain import health
from laer_domain.model import Account, Escalation, Role, Stage, Survey, Term
from laer_domain.policy import Policy

# --- reference: verbatim copy of the Decimal implementation -------------------------------

Band = Literal["green", "yellow", "red"]


def _ref_clamp(value: int) -> int:
    return max(0, min(100, value))


def _ref_usage_component(account: Account, policy: Policy) -> int:
    """Mean active users of the latest week against the activation target, 0..100."""
    if not account.daily_active_users:
        return policy.health_usage_unknown
    latest = max(date.fromisoformat(d) for d in account.daily_active_users)
    first = latest - timedelta(days=6)
    counts = [c for d, c in account.daily_active_users.items() if date.fromisoformat(d) >= first]
    target = policy.activation_share * account.term.seats
    if target <= 0:
        return 100
    mean = Decimal(sum(counts)) / len(counts)
    return _ref_clamp(int((mean * 100 / target).to_integral_value(ROUND_FLOOR)))


def _ref_support_component(account: Account, policy: Policy, now: datetime) -> int:
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
    return _ref_clamp(100 - penalty)


def _ref_billing_component(account: Account, policy: Policy) -> int:
    """100 minus a penalty per failed payment since the last paid invoice."""
    return _ref_clamp(100 - account.failed_payments * policy.health_failed_payment_penalty)


def _ref_band_for(score: int, policy: Policy) -> Band:
    """Return the band of a score."""
    if score >= policy.health_green_min:
        return "green"
    if score < policy.health_red_below:
        return "red"
    return "yellow"


def _ref_compute_health(
    account: Account, policy: Policy, now: datetime
) -> tuple[int, Band, dict[str, int]]:
    """Return (score, band, components) of an account as of `now`."""
    components = {
        "usage": _ref_usage_component(account, policy),
        "support": _ref_support_component(account, policy, now),
        "billing": _ref_billing_component(account, policy),
    }
    weights = {
        "usage": policy.health_weight_usage,
        "support": policy.health_weight_support,
        "billing": policy.health_weight_billing,
    }
    total = sum(weights.values(), Decimal(0))
    weighted = sum((weights[k] * components[k] for k in components), Decimal(0)) / total
    score = _ref_clamp(int(weighted.to_integral_value(ROUND_HALF_UP)))
    return score, _ref_band_for(score, policy), components


# --- helpers ------------------------------------------------------------------------------

NOW = datetime(2025, 6, 15, 12, 0, tzinfo=UTC)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def outcome(fn: Callable[[], Any]) -> tuple[str, Any]:
    """Return ("ok", value) or ("raised", (type, message)) of a call."""
    try:
        return "ok", fn()
    except Exception as exc:  # noqa: BLE001 - the exception itself is compared
        return "raised", (type(exc), str(exc))


def assert_same(account: Account, policy: Policy, now: datetime) -> None:
    """compute_health matches the reference, types of the results included."""
    expected = outcome(lambda: _ref_compute_health(account, policy, now))
    got = outcome(lambda: health.compute_health(account, policy, now))
    assert got == expected
    if expected[0] == "ok":
        score, _, components = got[1]
        assert type(score) is int and all(type(v) is int for v in components.values())
        assert list(components) == ["usage", "support", "billing"]
        # the components are the public functions' values too
        assert components == {
            "usage": outcome(lambda: health.usage_component(account, policy))[1],
            "support": health.support_component(account, policy, now),
            "billing": health.billing_component(account, policy),
        }


def make_account(
    *,
    seats: int = 10,
    daily: dict[str, int] | None = None,
    tickets: dict[str, str] | None = None,
    escalations: list[datetime] | None = None,
    surveys: dict[str, tuple[int, datetime]] | None = None,
    failed_payments: int = 0,
) -> Account:
    """Return a validated account with the given health inputs."""
    start = datetime(2025, 1, 1, tzinfo=UTC)
    return Account(
        id="acme",
        stage=Stage.ADOPT,
        stage_since=start,
        owner=Role.CUSTOMER_SUCCESS,
        landed_at=start,
        clock=start,
        term=Term(
            plan="pro",
            seats=seats,
            mrr=Decimal("99"),
            currency="EUR",
            start=start,
            end=start + timedelta(days=365),
        ),
        daily_active_users=daily or {},
        open_tickets=tickets or {},
        escalations=[
            Escalation(at=at, ticket_id=f"t{i}", event_id=f"e{i}")
            for i, at in enumerate(escalations or [])
        ],
        surveys={
            kind: Survey(score=score, at=at, event_id=f"s-{kind}")
            for kind, (score, at) in (surveys or {}).items()
        },
        failed_payments=failed_payments,
    )


# --- strategies ---------------------------------------------------------------------------

_TRICKY = [
    "0",
    "0E-40",
    "1",
    "1E+3",
    "0.5",
    "0.3333333333333333333333333333",
    "0.33333333333333333333333333334",
    "0.1234567890123456789012345678901234",
    "1E-30",
    "7E+20",
    "0.7000000000000000000000000001",
    "12345678901234567890123456789",
    "1E+999999",  # the Decimal code overflows
    "1E+60",
    "1E-60",
    "0E+999999",
    "5E-1000000",  # subnormal
]
WEIGHTS = st.one_of(
    st.integers(0, 20).map(lambda n: Decimal(n) / 20),  # 0, 0.05, ..., 1
    st.integers(0, 10).map(Decimal),
    st.decimals(min_value=0, max_value=100, places=3, allow_nan=False, allow_infinity=False),
    st.sampled_from(_TRICKY).map(Decimal),
)
SHARES = st.one_of(
    st.integers(1, 20).map(lambda n: Decimal(n) / 20),
    st.decimals(min_value=Decimal("0.001"), max_value=1, places=3),
    st.sampled_from(
        [
            "1",
            "1.000",
            "0.6",
            "0.3333333333333333333333333333",
            "0.33333333333333333333333333334",
            "0.7000000000000000000000000001",
            "1E-30",
            "0.000001",
            "1E-60",
            "1E-61",
            "1E-999999",  # the Decimal code overflows
        ]
    ).map(Decimal),
)
SCORES = st.integers(0, 100)


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    """Valid policies with varied weights, activation share and health thresholds."""
    red = draw(SCORES)
    fields: dict[str, Any] = {
        "health_weight_usage": draw(WEIGHTS),
        "health_weight_support": draw(WEIGHTS),
        "health_weight_billing": draw(WEIGHTS),
        "activation_share": draw(SHARES),
        "health_red_below": red,
        "health_green_min": draw(st.integers(red, 100)),
        "health_usage_unknown": draw(SCORES),
        "health_ticket_penalty_low": draw(SCORES),
        "health_ticket_penalty_normal": draw(SCORES),
        "health_ticket_penalty_high": draw(SCORES),
        "health_ticket_penalty_urgent": draw(SCORES),
        "health_escalation_penalty": draw(SCORES),
        "health_detractor_penalty": draw(SCORES),
        "health_failed_payment_penalty": draw(SCORES),
        "escalation_window_days": draw(st.integers(1, 60)),
        "health_survey_relevance_days": draw(st.integers(1, 120)),
        "nps_detractor_max": draw(st.integers(0, 10)),
        "csat_detractor_max": draw(st.integers(0, 5)),
    }
    try:
        return Policy(**fields)
    except ValidationError:
        assume(False)  # all weights zero
        raise


# a count of active users: mostly realistic, sometimes negative or far beyond any guard
COUNTS = st.one_of(
    st.integers(0, 60), st.integers(-5, 5), st.integers(0, 10**30), st.just(10**15 - 1)
)
SEATS = st.one_of(st.integers(1, 80), st.integers(-3, 0), st.integers(1, 10**20))


@st.composite
def daily_users(draw: st.DrawFn, anchor: date) -> dict[str, int]:
    """Active users per day, up to ~3 weeks before `anchor`, keyed as the handlers key them."""
    offsets = draw(st.lists(st.integers(-3, 21), unique=True, max_size=16))
    return {(anchor - timedelta(days=o)).isoformat(): draw(COUNTS) for o in offsets}


def instants(now: datetime, days: int) -> st.SearchStrategy[datetime]:
    """Instants around a window of `days` before `now`, with its exact boundaries."""
    start = now - timedelta(days=days)
    tick = timedelta(microseconds=1)
    return st.one_of(
        st.sampled_from([start - tick, start, start + tick, now - tick, now, now + tick]),
        st.integers(-(days + 5) * 24, 5 * 24).map(lambda h: now + timedelta(hours=h)),
    )


@st.composite
def cases(draw: st.DrawFn) -> tuple[Account, Policy, datetime]:
    """A policy, an account with every health input populated at random, and `now`."""
    policy = draw(policies())
    now = NOW + timedelta(minutes=draw(st.integers(-3 * 24 * 60, 3 * 24 * 60)))
    anchor = (now - timedelta(days=draw(st.integers(0, 10)))).date()
    esc_at = instants(now, policy.escalation_window_days)
    survey_at = instants(now, policy.health_survey_relevance_days)
    priorities = st.sampled_from(["low", "normal", "high", "urgent", "other", ""])
    account = make_account(
        seats=draw(SEATS),
        daily=draw(daily_users(anchor)),
        tickets=draw(st.dictionaries(st.sampled_from("abcdef"), priorities, max_size=6)),
        escalations=draw(st.lists(esc_at, max_size=4)),
        surveys=draw(
            st.dictionaries(
                st.sampled_from(["nps", "csat"]),
                st.tuples(st.integers(0, 10), survey_at),
                max_size=2,
            )
        ),
        failed_payments=draw(st.integers(0, 4)),
    )
    return account, policy, now


# --- properties ---------------------------------------------------------------------------


@SETTINGS
@given(cases())
def test_health_matches_reference(case: tuple[Account, Policy, datetime]) -> None:
    assert_same(*case)


@contextmanager
def _precision(prec: int) -> Iterator[None]:
    with localcontext() as ctx:
        ctx.prec = prec
        yield


@settings(SETTINGS, max_examples=150)
@given(cases(), st.sampled_from([3, 6, 12, 27, 28, 40]))
def test_health_follows_the_decimal_context(
    case: tuple[Account, Policy, datetime], prec: int
) -> None:
    """With a lower precision the Decimal rounding shows, in both the same way."""
    with _precision(prec):
        assert_same(*case)


PRECISIONS = st.sampled_from([None, None, 3, 6, 12])  # None: the default context


@contextmanager
def _maybe_precision(prec: int | None) -> Iterator[None]:
    if prec is None:
        yield
    else:
        with _precision(prec):
            yield


@settings(SETTINGS, max_examples=150)
@given(
    st.tuples(SCORES, SCORES, SCORES),
    st.tuples(WEIGHTS, WEIGHTS, WEIGHTS) | st.tuples(*[st.integers(0, 4).map(Decimal)] * 3),
    PRECISIONS,
)
# the weights' total rounds differently unless it is summed from Decimal(0), as before
@example((50, 100, 100), (Decimal("1.264"), Decimal("0.004"), Decimal("0")), 3)
def test_weighted_score_matches_reference(
    components: tuple[int, int, int], weights: tuple[Decimal, Decimal, Decimal], prec: int | None
) -> None:
    """Every component value against varied weights; integer weights give many exact .5 means."""
    usage, support, billing = components
    assume(sum(weights) > 0)
    policy = Policy(
        health_weight_usage=weights[0],
        health_weight_support=weights[1],
        health_weight_billing=weights[2],
        health_usage_unknown=usage,
        health_ticket_penalty_normal=100 - support,
        health_failed_payment_penalty=100 - billing,
    )
    account = make_account(tickets={"t": "normal"}, failed_payments=1)
    with _maybe_precision(prec):
        assert_same(account, policy, NOW)


@settings(SETTINGS, max_examples=150)
@given(
    st.sampled_from(["1", "0.5", "0.6", "0.25", "0.3", "0.75", "0.05", "0.07", "0.123"]),
    st.integers(1, 30),
    st.lists(st.integers(0, 40), min_size=1, max_size=10),
    PRECISIONS,
)
def test_usage_floor_matches_reference(
    share: str, seats: int, counts: list[int], prec: int | None
) -> None:
    """Small shares, seats and counts: many exact integers and near-integers to floor."""
    last = NOW.date()
    daily = {(last - timedelta(days=i)).isoformat(): c for i, c in enumerate(counts)}
    policy = Policy(activation_share=Decimal(share))
    with _maybe_precision(prec):
        assert_same(make_account(seats=seats, daily=daily), policy, NOW)


@settings(SETTINGS, max_examples=150)
@given(st.data())
def test_handler_written_accounts_match_reference(data: st.DataObject) -> None:
    """Accounts built by the real handlers (their own date keys and trimming)."""
    policy = data.draw(policies())
    decimals = [policy.activation_share, policy.health_weight_usage]
    decimals += [policy.health_weight_support, policy.health_weight_billing]
    assume(all(abs(d.adjusted()) < 1000 for d in decimals))  # the handlers overflow too
    sim = Sim(policy)
    sim.start(seats=data.draw(st.integers(1, 40)))
    sim.go_live(day(1))
    at = day(2)
    for _ in range(data.draw(st.integers(0, 25))):
        at += timedelta(hours=data.draw(st.integers(0, 60)))
        kind = data.draw(st.sampled_from(["active", "active", "ticket", "esc", "survey", "fail"]))
        if kind == "active":
            back = data.draw(st.integers(0, 20))
            sim.active(at - timedelta(days=back), data.draw(st.integers(0, 45)))
        elif kind == "ticket":
            ticket = {"ticket_id": data.draw(st.sampled_from("xyz")), "priority": "high"}
            sim.send("support.ticket_opened", at, ticket)
        elif kind == "esc":
            sim.send("support.ticket_escalated", at, {"ticket_id": "x"})
        elif kind == "survey":
            sim.send("support.survey_response", at, {"kind": "nps", "score": 3})
        else:
            invoice = {"invoice_id": "i", "amount": "9", "currency": "EUR", "attempt": 1}
            sim.send("billing.payment_failed", at, invoice)
        account = sim.account()
        assert_same(account, policy, at)
        assert_same(account, policy, at + timedelta(days=data.draw(st.integers(0, 100))))


# --- edge cases, spelled out --------------------------------------------------------------

ISO = (NOW.date() - timedelta(days=1)).isoformat()


@pytest.mark.parametrize(
    ("account", "policy"),
    [
        pytest.param(make_account(), Policy(), id="no-usage-data"),
        pytest.param(make_account(seats=3, daily={ISO: 2}), Policy(activation_share=1), id="2/3"),
        pytest.param(make_account(seats=0, daily={ISO: 3}), Policy(), id="seats-0"),
        pytest.param(make_account(seats=-2, daily={ISO: 3}), Policy(), id="seats-negative"),
        pytest.param(make_account(daily={"not-a-date": 1}), Policy(), id="bad-key"),
        pytest.param(make_account(daily={"0001-01-03": 1}), Policy(), id="date-min-overflow"),
        pytest.param(make_account(daily={ISO: -7}), Policy(), id="negative-count"),
        pytest.param(
            # exact rational 0.99999...: floor 0; the Decimal code rounds the target, gets 1
            make_account(seats=100, daily={"2025-06-01": 1, "2025-06-02": 0, "2025-06-03": 0}),
            Policy(activation_share=Decimal("0.33333333333333333333333333334")),
            id="usage-rounding-crosses-integer",
        ),
        pytest.param(
            make_account(daily={ISO: 10**40 + 1}, seats=3),
            Policy(activation_share=Decimal("1E-30")),
            id="huge-count",
        ),
        pytest.param(
            # usage 50, support 95, billing 100 with weights 1,1,0 -> 72.5 -> 73
            make_account(tickets={"t": "normal"}),
            Policy(
                health_weight_usage=1,
                health_weight_support=1,
                health_weight_billing=0,
            ),
            id="half-up",
        ),
        pytest.param(
            make_account(tickets={"t": "normal"}, failed_payments=1),
            Policy(
                health_weight_usage=Decimal("0.3333333333333333333333333333"),
                health_weight_support=Decimal("0.3333333333333333333333333333"),
                health_weight_billing=Decimal("0.3333333333333333333333333333"),
            ),
            id="thirds",
        ),
        pytest.param(
            make_account(daily={ISO: 3}),
            Policy(activation_share=Decimal("1E-999999")),
            id="usage-overflows",
        ),
        pytest.param(
            make_account(daily={ISO: 3}),
            Policy(health_weight_usage=Decimal("1E+999999")),
            id="score-overflows",
        ),
        pytest.param(
            make_account(failed_payments=1),
            Policy(
                health_weight_usage=Decimal("1E-30"),
                health_weight_support=Decimal("7E+20"),
                health_weight_billing=Decimal("0E-40"),
            ),
            id="weights-beyond-guard",
        ),
    ],
)
def test_edge_cases(account: Account, policy: Policy) -> None:
    assert_same(account, policy, NOW)


def test_usage_rounding_case_really_differs_from_exact_arithmetic() -> None:
    """The case above is one where naive exact arithmetic would be wrong."""
    share = Decimal("0.33333333333333333333333333334")
    assert (100 * 1 * 10**29) // (3 * 33333333333333333333333333334 * 100) == 0
    account = make_account(seats=100, daily={"2025-06-01": 1, "2025-06-02": 0, "2025-06-03": 0})
    assert _ref_usage_component(account, Policy(activation_share=share)) == 1
    assert health.usage_component(account, Policy(activation_share=share)) == 1


@example(date(2025, 3, 9))
@given(st.dates(min_value=date(1, 1, 8)))
def test_day_ordinals_follow_the_calendar(day_: date) -> None:
    account = make_account(daily={day_.isoformat(): 5, (day_ - timedelta(days=7)).isoformat(): 0})
    assert_same(account, Policy(), NOW)
