"""The application service: duplicates, parking, landing and sweeps."""

from __future__ import annotations

from datetime import timedelta

from domain_sim import T0, Sim, day, invoice, started_data

from laer_domain import (
    AccountNotLanded,
    InMemoryRepository,
    LifecycleService,
    Policy,
    SignalKind,
    Stage,
    apply_event,
    make_event,
    parse_event,
)


def test_duplicate_changes_nothing(sim: Sim) -> None:
    sim.start()
    first = sim.send("billing.invoice_paid", day(1), invoice(), id="pay-1")
    before = (sim.account(), len(sim.repo.signals), len(sim.repo.events))
    again = sim.send("billing.invoice_paid", day(1), invoice(), id="pay-1")
    assert first.status == "applied" and again.status == "duplicate" and again.outcomes == ()
    assert (sim.account(), len(sim.repo.signals), len(sim.repo.events)) == before


def test_same_id_from_another_source_is_applied(sim: Sim) -> None:
    sim.start()
    sim.send("support.ticket_opened", day(1), {"ticket_id": "a", "priority": "low"}, id="x")
    other = sim.send(  # an hour later: at the same instant the ids' order would decide
        "support.ticket_opened",
        day(1, 1),
        {"ticket_id": "b", "priority": "low"},
        id="x",
        source="desk-2",
    )
    assert other.status == "applied"
    assert set(sim.account().open_tickets) == {"a", "b"}


def test_parked_events_apply_in_event_time_order(sim: Sim) -> None:
    # read in the wrong order: the later one (by event time) first
    sim.send(
        "usage.active_users", T0 - timedelta(hours=1), {"date": "2024-12-31", "count": 3}, id="b"
    )
    sim.send(
        "usage.active_users", T0 - timedelta(hours=1), {"date": "2024-12-31", "count": 9}, id="a"
    )  # same time: id breaks the tie
    sim.send(
        "usage.active_users", T0 - timedelta(hours=3), {"date": "2024-12-31", "count": 1}, id="c"
    )
    assert [r.status for r in sim.results] == ["parked"] * 3
    assert len(sim.repo.parked["acme"]) == 3
    result = sim.start()
    assert len(result.outcomes) == 4
    applied = [e.id for a, e in sim.repo.events]
    assert applied[1:] == ["c", "a", "b"]
    assert sim.account().daily_active_users == {"2024-12-31": 3}  # the last applied wins


def test_parked_duplicate_is_a_duplicate(sim: Sim) -> None:
    assert sim.send("usage.provisioned", T0, id="p").status == "parked"
    assert sim.send("usage.provisioned", T0, id="p").status == "duplicate"
    assert len(sim.repo.parked["acme"]) == 1


def test_parked_origin_is_kept(sim: Sim) -> None:
    wire = make_event("laer.usage.provisioned", "zeta", T0, {})
    origin = {"topic": "laer.usage", "partition": 2, "offset": 41}
    sim.service.handle(parse_event(wire), origin)
    [(event, kept)] = sim.repo.parked["zeta"]
    assert kept == origin and event.id == wire["id"]


def test_apply_event_requires_landing() -> None:
    event = parse_event(make_event("laer.usage.provisioned", "acme", T0, {}))
    try:
        apply_event(None, event, Policy())
    except AccountNotLanded:
        pass
    else:  # pragma: no cover
        raise AssertionError("expected AccountNotLanded")


def test_apply_event_never_mutates_its_input() -> None:
    policy = Policy()
    start = parse_event(make_event("laer.billing.subscription_started", "acme", T0, started_data()))
    landed = apply_event(None, start, policy).account
    snapshot = landed.model_dump(mode="json")
    paid = parse_event(make_event("laer.billing.invoice_paid", "acme", day(1), invoice()))
    after = apply_event(landed, paid, policy)
    assert landed.model_dump(mode="json") == snapshot
    assert after.account is not landed and after.account.committed_at == day(1)


def test_sweep_covers_live_accounts_only() -> None:
    repo = InMemoryRepository()
    service = LifecycleService(repo, Policy())
    for account in ("a", "b"):
        service.handle(
            parse_event(
                make_event("laer.billing.subscription_started", account, T0, started_data(days=100))
            )
        )
    service.handle(
        parse_event(
            make_event(
                "laer.billing.subscription_canceled",
                "b",
                day(1),
                {"effective_at": day(1).isoformat(), "reason": "x"},
            )
        )
    )
    assert repo.live_account_ids() == ["a"]
    outcomes = service.sweep(day(20))
    assert [o.account.id for o in outcomes] == ["a"]
    assert [s.kind for s in outcomes[0].signals] == [
        SignalKind.RenewalWindowOpened,
        SignalKind.RenewalAtRisk,
    ]
    assert service.sweep(day(20))[0].signals == ()  # idempotent at the same instant
    assert repo.get("b") is not None and repo.get("b").stage is Stage.CHURNED
