"""Scenario tests of renewals, lapses, cancellations, churn and win-backs."""

from __future__ import annotations

from domain_sim import T0, Sim, core, day, invoice

from laer_domain import SignalKind, Stage

K = SignalKind


def test_early_renewal_passes_through_renew(sim: Sim) -> None:
    sim.start()
    sim.go_live(day(1))
    result = sim.renew(day(100), day(365), day(730), plan="pro", seats=12, mrr=1000)
    assert core(result.signals) == [
        K.AdoptionStalled,
        K.StageChanged,
        K.StageChanged,
        K.Renewed,
    ]
    assert sim.transitions()[-2:] == [("adopt", "renew"), ("renew", "adopt")]
    assert sim.signals(K.StageChanged)[-2].evidence.rule == "early_renewal"
    assert sim.one(K.Renewed).evidence.details["early"] is True
    assert sim.stage() is Stage.ADOPT and sim.account().term.end == day(730)
    assert sim.account().stage_since == day(100)
    sim.sweep(day(500))
    assert sim.stage() is Stage.ADOPT  # the window now follows the new term


def test_land_stays_land_when_window_opens(sim: Sim) -> None:
    sim.start(days=120)
    sim.send("billing.invoice_paid", day(1), invoice())  # never provisioned
    sim.sweep(day(40))
    assert sim.stage() is Stage.LAND
    window = sim.one(K.RenewalWindowOpened)
    at_risk = sim.one(K.RenewalAtRisk)
    assert window.at == at_risk.at == day(30)
    assert at_risk.evidence.rule == "still_in_land" and at_risk.stage is Stage.LAND
    # going live later enters adopt and, the window being open, renew at once
    sim.send("usage.provisioned", day(50))
    assert sim.transitions()[-2:] == [("land", "adopt"), ("adopt", "renew")]
    assert len(sim.signals(K.RenewalWindowOpened)) == 1


def test_short_term_landing_opens_window_at_landing(sim: Sim) -> None:
    result = sim.start(days=60)
    assert [s.kind for s in result.signals] == [
        K.AccountLanded,
        K.RenewalWindowOpened,
        K.RenewalAtRisk,
    ]
    assert all(s.at == T0 for s in result.signals)


def test_renewal_at_risk_with_open_churn_risk(sim: Sim) -> None:
    sim.start()
    sim.go_live(day(1))
    sim.send("support.survey_response", day(270), {"kind": "nps", "score": 2})
    sim.sweep(day(280))
    at_risk = sim.one(K.RenewalAtRisk)
    assert at_risk.at == day(275) and at_risk.stage is Stage.RENEW
    assert at_risk.evidence.rule == "open_churn_risk"
    assert at_risk.evidence.details["churn_risk_rules"] == ["nps_detractor"]


def test_renewal_at_risk_when_risk_raised_in_renew(sim: Sim) -> None:
    sim.start()
    sim.go_live(day(1))
    sim.sweep(day(280))
    assert sim.stage() is Stage.RENEW and sim.signals(K.RenewalAtRisk) == []
    result = sim.send(
        "billing.payment_failed",
        day(290),
        {
            "invoice_id": "i9",
            "amount": 990,
            "currency": "EUR",
            "attempt": 1,
        },
    )
    assert [s.kind for s in result.signals] == [K.ChurnRiskRaised, K.RenewalAtRisk]


def test_future_cancellation_churns_at_effective_at(sim: Sim) -> None:
    sim.start()
    sim.go_live(day(1))
    sim.cancel(day(10), day(40), "budget")
    assert sim.stage() is Stage.ADOPT
    sim.sweep(day(39))
    assert sim.stage() is Stage.ADOPT
    late = sim.send("support.ticket_opened", day(45), {"ticket_id": "t1", "priority": "low"})
    assert [s.kind for s in late.signals] == [K.StageChanged, K.Churned]
    churned = sim.one(K.Churned)
    assert churned.at == day(40) and churned.stage is Stage.CHURNED
    assert churned.evidence.rule == "canceled"
    assert churned.evidence.details["cancel_reason"] == "budget"
    assert sim.stage() is Stage.CHURNED and sim.account().stage_since == day(40)
    assert "t1" not in sim.account().open_tickets  # churned: recorded, not applied


def test_past_effective_at_churns_at_effective_at(sim: Sim) -> None:
    sim.start()
    sim.go_live(day(1))
    sim.cancel(day(20), day(15), "switching")
    assert sim.stage() is Stage.CHURNED
    assert sim.one(K.Churned).at == day(15)


def test_lapsed_term_goes_through_renew_to_churned(sim: Sim) -> None:
    sim.start()
    sim.go_live(day(1))
    sim.sweep(day(500))
    assert sim.transitions()[-2:] == [("adopt", "renew"), ("renew", "churned")]
    changes = [c for c in sim.repo.stage_changes if c.account_id == "acme"][-2:]
    assert [c.at for c in changes] == [day(275), day(365 + 14)]
    churned = sim.one(K.Churned)
    assert churned.evidence.rule == "term_lapsed" and churned.evidence.details["grace_days"] == 14


def test_renewal_within_grace_keeps_the_account(sim: Sim) -> None:
    sim.start()
    sim.go_live(day(1))
    sim.renew(day(370), day(365), day(730), plan="pro", seats=10, mrr=990)
    assert sim.stage() is Stage.ADOPT
    assert sim.signals(K.Churned) == []


def test_churned_account_records_events_but_raises_nothing(sim: Sim) -> None:
    sim.start()
    sim.go_live(day(1))
    sim.sweep(day(400))
    assert sim.stage() is Stage.CHURNED
    before = len(sim.repo.signals)
    for n, (kind, data) in enumerate([
        (
            "billing.payment_failed",
            {"invoice_id": "x", "amount": 1, "currency": "EUR", "attempt": 1},
        ),
        (
            "billing.subscription_renewed",
            {
                "term_start": day(400).isoformat(),
                "term_end": day(765).isoformat(),
                "plan": "pro",
                "seats": 1,
                "mrr": 1,
            },
        ),
        ("usage.limit_reached", {"limit": "x", "used": 5, "allowed": 1}),
        ("support.survey_response", {"kind": "csat", "score": 1}),
    ]):
        # ids in event-time order: same-instant events are ordered by id
        result = sim.send(kind, day(401), data, id=f"late-{n}")
        assert result.status == "applied" and result.signals == ()
    assert len(sim.repo.signals) == before and sim.stage() is Stage.CHURNED
    assert len([e for a, e in sim.repo.events if a == "acme"]) == 2 + 1 + 4


def test_win_back_needs_paid_and_provisioned_again(sim: Sim) -> None:
    sim.start()
    sim.go_live(day(1))
    sim.cancel(day(30), day(30), "budget")
    assert sim.stage() is Stage.CHURNED
    back = sim.start(day(200), seats=5)
    assert [s.kind for s in back.signals] == [K.StageChanged, K.AccountLanded]
    assert back.signals[0].evidence.rule == "win_back"
    account = sim.account()
    assert account.stage is Stage.LAND and account.wins_back == 1 and account.term.number == 2
    assert account.committed_at is None and account.functional_at is None
    sim.send("billing.invoice_paid", day(201), invoice(2))
    assert sim.stage() is Stage.LAND
    live = sim.send("usage.provisioned", day(202))
    assert [s.kind for s in live.signals] == [K.WentLive, K.StageChanged]
    assert sim.transitions() == [
        (None, "land"),
        ("land", "adopt"),
        ("adopt", "churned"),
        ("churned", "land"),
        ("land", "adopt"),
    ]
    assert len(sim.signals(K.AccountLanded)) == 2
