"""Churn-risk triggers, their open/close rule, and the health score."""

from __future__ import annotations

from typing import Any

from domain_sim import Sim, day, invoice

from laer_domain import Policy, SignalKind, Stage
from laer_domain.health import band_for

K = SignalKind


def adopted(policy: Policy | None = None) -> Sim:
    sim = Sim(policy or Policy(key_features=[]))
    sim.start(seats=10)
    sim.go_live(day(1))
    return sim


def failed(n: int) -> dict[str, Any]:
    return {"invoice_id": f"inv-{n}", "amount": "990", "currency": "EUR", "attempt": n}


def test_failed_payment_raises_once_and_green_health_closes() -> None:
    sim = adopted()
    assert sim.account().health is not None and sim.account().health.score == 80
    first = sim.send("billing.payment_failed", day(5), failed(1))
    [raised] = first.signals
    assert raised.kind is K.ChurnRiskRaised and raised.evidence.rule == "payment_failed"
    assert raised.evidence.event_ids == (sim.repo.events[-1][1].id,)
    assert raised.evidence.details["attempt"] == 1 and raised.evidence.details["amount"] == "990"
    assert sim.account().health.band == "green"  # 69.5 rounds up to 70

    second = sim.send("billing.payment_failed", day(8), failed(2))
    assert second.signals == ()  # the risk is already open
    health = sim.account().health
    assert (health.score, health.band, health.components["billing"]) == (59, "yellow", 30)
    risk = sim.account().churn_risk
    assert risk is not None and risk.last_trigger_at == day(8)

    sim.send("billing.invoice_paid", day(9), invoice(2))
    assert sim.account().health.band == "green"
    assert sim.account().churn_risk is None  # green again: risk over
    bands = [(h.score, h.band) for h in sim.repo.health_changes]
    assert bands == [(80, "green"), (70, "green"), (59, "yellow"), (80, "green")]


def test_two_escalations_within_window() -> None:
    sim = adopted()
    sim.send("support.ticket_escalated", day(2), {"ticket_id": "t1"})
    assert sim.signals(K.ChurnRiskRaised) == []
    result = sim.send("support.ticket_escalated", day(30), {"ticket_id": "t2"})
    [raised] = result.signals
    assert raised.evidence.rule == "repeated_escalations"
    assert raised.evidence.details["escalations"] == 2
    assert raised.evidence.details["tickets"] == ["t1", "t2"]
    assert len(raised.evidence.event_ids) == 2


def test_escalations_further_apart_do_not_count() -> None:
    sim = adopted()
    sim.send("support.ticket_escalated", day(2), {"ticket_id": "t1"})
    sim.send("support.ticket_escalated", day(32), {"ticket_id": "t2"})
    assert sim.signals(K.ChurnRiskRaised) == []
    assert len(sim.account().escalations) == 1  # pruned outside the window


def test_detractor_scores() -> None:
    cases = [
        ("nps", 6, True),
        ("nps", 7, False),
        ("nps", 0, True),
        ("csat", 2, True),
        ("csat", 3, False),
    ]
    for kind, score, raises in cases:
        sim = adopted()
        result = sim.send("support.survey_response", day(3), {"kind": kind, "score": score})
        kinds = [s.kind for s in result.signals]
        assert (K.ChurnRiskRaised in kinds) is raises, (kind, score)
        if raises:
            assert result.signals[0].evidence.rule == f"{kind}_detractor"
            assert result.signals[0].evidence.details["score"] == score


def test_usage_drop_week_over_week() -> None:
    for later, raises in ((6, True), (7, False)):
        sim = adopted()
        sim.active(day(3), 10)
        result = sim.active(day(10), later)
        raised = [s for s in result.signals if s.kind is K.ChurnRiskRaised]
        assert bool(raised) is raises, later
        if raises:
            assert raised[0].evidence.rule == "usage_drop"
            assert raised[0].evidence.details["previous_count"] == 10


def test_risk_closes_after_quiet_days_then_reopens() -> None:
    sim = adopted()
    sim.send("support.survey_response", day(5), {"kind": "nps", "score": 3})
    sim.sweep(day(34, 23))
    assert sim.account().churn_risk is not None
    sim.sweep(day(35))
    assert sim.account().churn_risk is None
    sim.send("support.survey_response", day(40), {"kind": "csat", "score": 1})
    raised = sim.signals(K.ChurnRiskRaised)
    assert [s.evidence.rule for s in raised] == ["nps_detractor", "csat_detractor"]


def test_new_trigger_extends_the_risk() -> None:
    sim = adopted()
    sim.send("support.survey_response", day(5), {"kind": "nps", "score": 3})
    sim.send("billing.payment_failed", day(30), failed(1))
    sim.sweep(day(50))
    risk = sim.account().churn_risk
    assert risk is not None and risk.rules == ["nps_detractor", "payment_failed"]
    sim.sweep(day(60))
    assert sim.account().churn_risk is None


def test_red_health_raises_and_holds_the_risk() -> None:
    sim = adopted()
    sim.active(day(2), 0)
    assert sim.account().health.score == 60
    for n in range(1, 4):
        sim.send("support.ticket_opened", day(2 + n), {"ticket_id": f"t{n}", "priority": "urgent"})
    assert sim.account().health.band == "yellow" and sim.signals(K.ChurnRiskRaised) == []
    result = sim.send("support.ticket_opened", day(6), {"ticket_id": "t4", "priority": "urgent"})
    [raised] = result.signals
    assert raised.evidence.rule == "red_health" and raised.evidence.details["score"] == 36
    sim.sweep(day(60))  # still red: the band is a standing trigger
    assert sim.account().churn_risk is not None
    assert len(sim.signals(K.ChurnRiskRaised)) == 1
    for n in range(1, 5):
        sim.send("support.ticket_resolved", day(61), {"ticket_id": f"t{n}"})
    assert sim.account().health.band == "yellow" and sim.account().churn_risk is not None
    sim.active(day(62), 10)
    assert sim.account().health.band == "green" and sim.account().churn_risk is None


def test_health_change_only_when_score_or_band_changes() -> None:
    sim = adopted()
    count = len(sim.repo.health_changes)
    sim.send("usage.feature_used", day(3), {"feature": "reports", "count": 2})
    sim.send("support.ticket_resolved", day(3), {"ticket_id": "unknown"})
    assert len(sim.repo.health_changes) == count
    sim.send("support.ticket_opened", day(4), {"ticket_id": "t", "priority": "high"})
    assert len(sim.repo.health_changes) == count + 1
    change = sim.repo.health_changes[-1]
    assert change.components["support"] == 90 and change.at == day(4)


def test_band_thresholds() -> None:
    policy = Policy()
    assert [band_for(s, policy) for s in (100, 70, 69, 40, 39, 0)] == [
        "green",
        "green",
        "yellow",
        "yellow",
        "red",
        "red",
    ]


def test_churned_account_has_no_open_risk() -> None:
    sim = adopted()
    sim.send("billing.payment_failed", day(3), failed(1))
    sim.cancel(day(4), day(4), "x")
    assert sim.stage() is Stage.CHURNED and sim.account().churn_risk is None


def test_state_stays_bounded_under_a_flood() -> None:
    sim = adopted()
    for n in range(210):
        # sent in event-time order, ties by id (an event that sorts earlier would rebuild)
        at = day(2, hours=n)
        sim.send("usage.feature_used", at, {"feature": f"f{n}", "count": 1}, id=f"{n:03}a")
        sim.send("support.ticket_opened", at, {"ticket_id": f"t{n}", "priority": "low"},
                 id=f"{n:03}b")
        sim.send("support.ticket_escalated", at, {"ticket_id": f"t{n}"}, id=f"{n:03}c")
        sim.send("usage.limit_reached", at, {"limit": f"l{n}", "used": 2, "allowed": 1},
                 id=f"{n:03}d")
        sim.send("usage.active_users", at, {"date": day(2 + n).date().isoformat(),
                                            "count": n % 10}, id=f"{n:03}e")
    account = sim.account()
    assert len(account.feature_usage) <= 64
    assert len(account.open_tickets) <= 200
    assert len(account.escalations) <= 50
    assert len(account.daily_active_users) <= 14
    assert len(account.fired) <= 40
    assert len(account.held_opportunities) <= 1
    assert len(account.model_dump_json()) < 64_000
