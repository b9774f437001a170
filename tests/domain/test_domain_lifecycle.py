"""Scenario tests walking accounts from landing through adoption to expansion."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from domain_sim import T0, Sim, core, day, invoice

from laer_domain import Role, SignalKind, Stage

K = SignalKind
GOALS = [{"key": "tickets_closed", "target": 100}, {"key": "csat_avg", "target": "4.5"}]


def test_full_cycle_with_goals_and_renewal(sim: Sim) -> None:
    landed = sim.start(goals=GOALS, seats=10)
    assert [s.kind for s in landed.signals] == [K.AccountLanded]
    assert sim.stage() is Stage.LAND and sim.account().owner is Role.SALES

    sim.send("billing.invoice_paid", day(1), invoice())
    assert sim.stage() is Stage.LAND  # committed but not functional yet
    result = sim.send("usage.provisioned", day(2))
    assert [s.kind for s in result.signals] == [K.WentLive, K.StageChanged]
    moved = result.signals[1]
    assert moved.evidence.rule == "committed_and_functional"
    assert moved.evidence.details["from"] == "land" and moved.evidence.details["to"] == "adopt"
    assert moved.evidence.event_ids == (result.outcomes[0].stage_changes[0].event_id,)
    assert sim.stage() is Stage.ADOPT and sim.account().owner is Role.CUSTOMER_SUCCESS

    # 9 of 10 seats active: an opportunity, held while adopting
    held = sim.active(day(5), 9)
    assert K.ExpansionOpportunity not in [s.kind for s in held.signals]
    assert sim.account().held_opportunities[0].rule == "seat_usage"

    sim.send("usage.outcome_achieved", day(10), {"goal": "tickets_closed", "value": 50})
    assert sim.signals(K.OutcomeAchieved) == []
    first = sim.send("usage.outcome_achieved", day(12), {"goal": "tickets_closed", "value": 120})
    assert [s.kind for s in first.signals] == [K.OutcomeAchieved]
    assert first.signals[0].evidence.details == {
        "goal": "tickets_closed",
        "target": "100",
        "value": "120",
    }
    assert sim.stage() is Stage.ADOPT  # one goal is still open

    done = sim.send("usage.outcome_achieved", day(20), {"goal": "csat_avg", "value": "4.6"})
    assert core(done.signals) == [K.OutcomeAchieved, K.StageChanged, K.ExpansionOpportunity]
    assert len(sim.signals(K.FeatureUnderused)) == 2
    assert sim.stage() is Stage.EXPAND and sim.account().owner is Role.SALES
    released = sim.one(K.ExpansionOpportunity)
    assert released.at == day(20) and released.stage is Stage.EXPAND
    assert released.evidence.rule == "seat_usage"
    assert released.evidence.details["count"] == 9
    assert released.evidence.details["held_since"] == "2025-01-06T00:00:00Z"
    assert released.evidence.event_ids == (
        held.outcomes[0].account.held_opportunities[0].event_ids[0],
    )

    # the daily sweep opens the renewal window at term_end - 90 days
    sim.sweep(day(300))
    window = sim.one(K.RenewalWindowOpened)
    assert window.at == day(365 - 90)
    assert window.evidence.details["window_days"] == 90
    assert sim.stage() is Stage.RENEW and sim.account().stage_since == day(275)
    assert sim.account().owner is Role.RENEWAL_MANAGER
    assert sim.signals(K.RenewalAtRisk) == []

    renewed = sim.renew(day(360), day(365), day(730), plan="enterprise", seats=25, mrr=2000,
                        goals=[{"key": "automations", "target": 10}])
    assert [s.kind for s in renewed.signals] == [K.StageChanged, K.Renewed]
    assert renewed.signals[1].evidence.details["early"] is False
    account = sim.account()
    assert account.stage is Stage.ADOPT and account.term.number == 2
    assert account.term.seats == 25 and account.term.mrr == Decimal(2000)
    assert [g.key for g in account.goals] == ["automations"]
    assert not any(g.achieved for g in account.goals)  # achievements do not carry over
    assert account.outcome_achieved_at is None
    assert sim.transitions() == [
        (None, "land"),
        ("land", "adopt"),
        ("adopt", "expand"),
        ("expand", "renew"),
        ("renew", "adopt"),
    ]
    # an old-term goal key counts for nothing in the new term
    sim.send("usage.outcome_achieved", day(370), {"goal": "tickets_closed", "value": 999})
    assert sim.stage() is Stage.ADOPT
    assert len(sim.signals(K.OutcomeAchieved)) == 2

    # the second term lapses: adopt -> renew -> churned, then a win-back lands again
    sim.sweep(day(800))
    assert sim.stage() is Stage.CHURNED
    assert sim.one(K.Churned).at == day(730 + 14)
    sim.start(day(900), goals=[])
    sim.go_live(day(901))
    assert sim.stage() is Stage.ADOPT
    assert sim.transitions()[5:] == [
        ("adopt", "renew"),
        ("renew", "churned"),
        ("churned", "land"),
        ("land", "adopt"),
    ]
    assert len(sim.signals(K.RenewalWindowOpened)) == 2


def test_outcome_for_undeclared_goal_counts_for_nothing(sim: Sim) -> None:
    sim.start(goals=[{"key": "g", "target": 1}])
    sim.go_live(day(1))
    sim.send("usage.outcome_achieved", day(2), {"goal": "other", "value": 5})
    assert sim.stage() is Stage.ADOPT and sim.signals(K.OutcomeAchieved) == []


def test_goal_achieved_in_land_moves_on_through_adopt(sim: Sim) -> None:
    sim.start(goals=[{"key": "g", "target": 1}])
    sim.send("usage.outcome_achieved", day(1), {"goal": "g", "value": 1})
    assert sim.stage() is Stage.LAND
    sim.go_live(day(2))
    assert sim.stage() is Stage.EXPAND
    assert sim.transitions()[-2:] == [("land", "adopt"), ("adopt", "expand")]


def test_activation_without_goals(sim: Sim) -> None:
    sim.start(seats=10)  # no goals: 60 % of seats on 7 of the last 14 days
    sim.go_live(day(1))
    for n in range(2, 8):
        sim.active(day(n), 6)
    sim.active(day(8), 5)  # 50 %: does not qualify
    assert sim.stage() is Stage.ADOPT
    result = sim.active(day(9), 7)
    assert [s.kind for s in result.signals][:2] == [K.OutcomeAchieved, K.StageChanged]
    evidence = result.signals[0].evidence
    assert evidence.rule == "activation" and evidence.details["goal"] == "activation"
    assert evidence.details["qualifying_days"] == [
        "2025-01-03",
        "2025-01-04",
        "2025-01-05",
        "2025-01-06",
        "2025-01-07",
        "2025-01-08",
        "2025-01-10",
    ]
    assert sim.stage() is Stage.EXPAND


def test_activation_correction_and_window(sim: Sim) -> None:
    sim.start(seats=10)
    sim.go_live(day(1))
    for n in range(2, 8):
        sim.active(day(n), 8)  # six qualifying days
    sim.send("usage.active_users", day(7, 12), {"date": day(7).date().isoformat(), "count": 2})
    assert len(sim.account().daily_active_users) == 6
    sim.active(day(8), 9)  # 6th qualifying day only, since day 7 was corrected down
    assert sim.stage() is Stage.ADOPT
    # a report 20 days later: the 14-day window ending there holds no old days
    sim.active(day(28), 9)
    assert sim.stage() is Stage.ADOPT
    for n in range(29, 35):
        sim.active(day(n), 9)
    assert sim.stage() is Stage.EXPAND
    assert sim.one(K.OutcomeAchieved).evidence.details["qualifying_days"][0] == "2025-01-29"


def test_adoption_stalled_is_stamped_when_due(sim: Sim) -> None:
    sim.start(goals=[{"key": "g", "target": 10}])
    sim.go_live(day(1))
    sim.sweep(day(30))
    assert sim.signals(K.AdoptionStalled) == []
    sim.sweep(day(45))
    stalled = sim.one(K.AdoptionStalled)
    assert stalled.at == day(31) and stalled.stage is Stage.ADOPT
    assert stalled.evidence.details["pending_goals"] == ["g"]
    assert stalled.evidence.details["stall_days"] == 30
    sim.sweep(day(60))
    assert len(sim.signals(K.AdoptionStalled)) == 1  # once per stint in adopt


def test_stall_is_applied_before_a_later_event(sim: Sim) -> None:
    sim.start(goals=[{"key": "g", "target": 10}])
    sim.go_live(day(1))
    result = sim.send("usage.outcome_achieved", day(40), {"goal": "g", "value": 10})
    assert core(result.signals)[:2] == [K.AdoptionStalled, K.OutcomeAchieved]
    assert sim.one(K.AdoptionStalled).at == day(31)


def test_no_stall_when_outcome_reached_in_time(sim: Sim) -> None:
    sim.start(goals=[{"key": "g", "target": 10}])
    sim.go_live(day(1))
    sim.send("usage.outcome_achieved", day(20), {"goal": "g", "value": 11})
    sim.sweep(day(90))
    assert sim.signals(K.AdoptionStalled) == []


def test_feature_underused_after_go_live(sim: Sim) -> None:
    sim.start()
    sim.send("billing.invoice_paid", day(1), invoice())
    sim.send("usage.provisioned", day(2))
    sim.send("usage.feature_used", day(5), {"feature": "reports", "count": 3})
    sim.send("usage.feature_used", day(6), {"feature": "integrations", "count": 0})
    sim.sweep(day(15, 23))
    assert sim.signals(K.FeatureUnderused) == []
    sim.sweep(day(20))
    underused = sim.one(K.FeatureUnderused)
    assert underused.at == day(16)
    assert underused.evidence.details["feature"] == "integrations"
    assert underused.evidence.details["went_live_at"] == "2025-01-03T00:00:00Z"
    sim.sweep(day(40))
    assert len(sim.signals(K.FeatureUnderused)) == 1


def test_hard_limit_is_raised_in_adopt(sim: Sim) -> None:
    sim.start()
    sim.go_live(day(1))
    near = sim.send("usage.limit_reached", day(3), {"limit": "storage", "used": 9, "allowed": 10})
    assert near.signals == ()
    hit = sim.send("usage.limit_reached", day(4), {"limit": "storage", "used": 10, "allowed": 10})
    [signal] = hit.signals
    assert signal.kind is K.ExpansionOpportunity and signal.stage is Stage.ADOPT
    assert signal.evidence.rule == "hard_limit"
    assert signal.evidence.details == {"limit": "storage", "used": 10, "allowed": 10}
    again = sim.send("usage.limit_reached", day(5), {"limit": "storage", "used": 11, "allowed": 10})
    assert again.signals == ()  # once per limit and term
    assert sim.stage() is Stage.ADOPT


def test_usage_opportunity_raised_at_once_in_expand(sim: Sim) -> None:
    sim.start(goals=[{"key": "g", "target": 1}])
    sim.go_live(day(1))
    sim.send("usage.outcome_achieved", day(2), {"goal": "g", "value": 1})
    result = sim.active(day(3), 9)
    assert [s.kind for s in result.signals] == [K.ExpansionOpportunity]
    assert result.signals[0].stage is Stage.EXPAND


def test_provisioned_before_subscription_is_parked(sim: Sim) -> None:
    parked = sim.send("usage.provisioned", T0 - timedelta(hours=2))
    assert parked.status == "parked" and sim.repo.get("acme") is None
    paid = sim.send("billing.invoice_paid", T0 - timedelta(hours=1), invoice())
    assert paid.status == "parked"
    landed = sim.start(T0)
    assert landed.status == "applied" and len(landed.outcomes) == 3
    assert [s.kind for s in landed.signals] == [K.AccountLanded, K.WentLive, K.StageChanged]
    assert sim.stage() is Stage.ADOPT
    assert sim.account().stage_since == T0  # never before landing
    assert sim.repo.parked == {}


def test_paid_and_provisioned_in_either_order() -> None:
    for order in (
        ("billing.invoice_paid", "usage.provisioned"),
        ("usage.provisioned", "billing.invoice_paid"),
    ):
        sim = Sim()
        sim.start()
        for n, kind in enumerate(order, start=1):
            sim.send(kind, day(n), invoice() if "invoice" in kind else {})
        assert sim.stage() is Stage.ADOPT
        assert sim.account().stage_since == day(2)
        assert sim.kinds().count(K.WentLive) == 1


def test_plan_change_updates_activation_target(sim: Sim) -> None:
    sim.start(seats=20)
    sim.go_live(day(1))
    for n in range(2, 9):
        sim.active(day(n), 10)  # 50 % of 20 seats
    assert sim.stage() is Stage.ADOPT
    sim.send("billing.plan_changed", day(9), {"plan": "team", "seats": 15, "mrr": 700})
    assert sim.stage() is Stage.EXPAND  # 10 >= 60 % of 15


def test_signal_ids_are_deterministic() -> None:
    def run() -> list[str]:
        sim = Sim()
        sim.start(goals=GOALS)
        sim.go_live(day(1))
        sim.sweep(day(100))
        return [s.id for s in sim.repo.signals]

    first = run()
    assert first == run() and len(set(first)) == len(first)
