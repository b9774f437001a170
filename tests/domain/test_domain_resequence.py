"""Same events, same state: any cross-topic interleaving gives the event-time-order result.

The reference handles every event sorted by (time, id). Reading the three topics in any
order that keeps each topic's own order, one event at a time or in batches of any size, must
end in the same accounts, stage histories, health histories, signals (by id) and timelines.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from cross_topic import POLICY, cohorts, event_time_order, handled, interleavings, view
from domain_sim import Sim, day, invoice
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_domain_batch import OwnedRepository

from laer_domain import (
    CloudEvent,
    EventType,
    InMemoryRepository,
    LifecycleService,
    SignalKind,
    Stage,
    make_event,
    parse_event,
)
from laer_domain.handlers import HANDLERS
from laer_domain.lifecycle import Ctx

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@SETTINGS
@given(st.data())
def test_any_interleaving_one_at_a_time_equals_event_time_order(data: st.DataObject) -> None:
    topics = data.draw(cohorts())
    arrival = data.draw(interleavings(topics))
    assert view(handled(arrival)) == view(handled(event_time_order(topics)))


class LookaheadRepository(OwnedRepository):
    """Knows each batch's events, as the consumer's batch store does (`upcoming`)."""

    batch_events: list[CloudEvent]
    reads: int = 0

    def upcoming(self, account_id: str) -> list[CloudEvent]:
        return [e for e in self.batch_events if e.account_id == account_id]

    def timeline(self, account_id: str) -> list[CloudEvent]:
        self.reads += 1
        return super().timeline(account_id)

    @classmethod
    def of(cls, sim: Sim, batch: list[CloudEvent]) -> LookaheadRepository:
        """The simulator's store, about to handle `batch` in place."""
        repo = cls(**{name: getattr(sim.repo, name) for name in (
            "accounts", "processed", "parked", "signals", "stage_changes", "health_changes",
            "events", "retracted")})
        repo.batch_events = batch
        repo.begin()
        return repo


def in_batches(events: Sequence[CloudEvent], cuts: list[int], store: str
               ) -> InMemoryRepository:
    """The events handled by `service.batch()` runs ending at `cuts`."""
    repo = {"copied": InMemoryRepository, "in-place": OwnedRepository,
            "lookahead": LookaheadRepository}[store]()
    service = LifecycleService(repo, POLICY)
    bounds = sorted({0, len(events), *(c for c in cuts if 0 < c < len(events))})
    for start, end in zip(bounds, bounds[1:], strict=False):
        if isinstance(repo, LookaheadRepository):
            repo.batch_events = list(events[start:end])
        if isinstance(repo, OwnedRepository):
            repo.begin()
            batch = service.batch(reload=repo.reload)
        else:
            batch = service.batch()
        for event in events[start:end]:
            batch.handle(event)
    return repo


@pytest.mark.parametrize("store", ["copied", "in-place", "lookahead"])
@SETTINGS
@given(st.data())
def test_any_interleaving_in_batches_equals_event_time_order(store: str,
                                                             data: st.DataObject) -> None:
    topics = data.draw(cohorts())
    arrival = data.draw(interleavings(topics))
    cuts = data.draw(st.lists(st.integers(0, len(arrival)), max_size=6))
    assert view(in_batches(arrival, cuts, store)) == view(handled(event_time_order(topics)))


def test_a_batch_rebuilds_an_account_once_for_all_its_late_events() -> None:
    sim = _renewal_story()
    late = [ev for ev in (
        parse_event(make_event("laer.support.ticket_opened", "acme", day(50),
                               {"ticket_id": "t1", "priority": "low"})),
        parse_event(make_event("laer.billing.subscription_renewed", "acme", day(95), {
            "term_start": day(100).isoformat(), "term_end": day(300).isoformat(),
            "plan": "pro", "seats": 10, "mrr": 990})),
        parse_event(make_event("laer.usage.active_users", "acme", day(130),
                               {"date": day(130).date().isoformat(), "count": 8})))]
    repo = LookaheadRepository.of(sim, late)
    batch = LifecycleService(repo, POLICY).batch(reload=repo.reload)
    assert [batch.handle(e).status for e in late] == ["resequenced", "resequenced", "applied"]
    assert repo.reads == 1  # one rebuild for the batch
    assert view(repo) == view(handled(sorted((e for _, e in repo.events),
                                             key=lambda e: (e.time, e.id))))


def test_a_failing_event_taken_in_ahead_fails_on_its_own_turn(
        monkeypatch: pytest.MonkeyPatch) -> None:
    sim = _renewal_story()
    original = HANDLERS[EventType.TICKET_OPENED]

    def failing(ctx: Ctx, event: CloudEvent) -> None:
        original(ctx, event)
        raise RuntimeError("rule failed")

    monkeypatch.setitem(HANDLERS, EventType.TICKET_OPENED, failing)
    renewal = parse_event(make_event("laer.billing.subscription_renewed", "acme", day(95), {
        "term_start": day(100).isoformat(), "term_end": day(300).isoformat(),
        "plan": "pro", "seats": 10, "mrr": 990}))
    bad = parse_event(make_event("laer.support.ticket_opened", "acme", day(97),
                                 {"ticket_id": "t1", "priority": "low"}))
    repo = LookaheadRepository.of(sim, [renewal, bad])
    batch = LifecycleService(repo, POLICY).batch(reload=repo.reload)
    assert batch.handle(renewal).status == "resequenced"
    with pytest.raises(RuntimeError):
        batch.handle(bad)
    assert not repo.is_processed(bad.key)
    monkeypatch.undo()
    assert view(repo) == view(handled(sorted((e for _, e in repo.events),
                                             key=lambda e: (e.time, e.id))))
    assert bad.key not in {e.key for _, e in repo.events}


class CountingRepository(InMemoryRepository):
    """Counts timeline reads: only a late event may read the account's timeline."""

    reads: int = 0

    def timeline(self, account_id: str) -> list[CloudEvent]:
        self.reads += 1
        return super().timeline(account_id)


@SETTINGS
@given(st.data())
def test_events_in_event_time_order_never_read_the_timeline(data: st.DataObject) -> None:
    ordered = event_time_order(data.draw(cohorts()))
    repo = CountingRepository()
    service = LifecycleService(repo, POLICY)
    statuses = {service.handle(event).status for event in ordered}
    assert "resequenced" not in statuses and repo.reads == 0


def _renewal_story() -> Sim:
    """The issue's account: renewed before term end, read after a usage event past the grace."""
    sim = Sim()
    sim.start(days=100)
    sim.go_live(day(1))
    sim.active(day(120), 8)  # term end + 20 days: the term lapses at day 114 first
    assert sim.stage() is Stage.CHURNED
    return sim


def test_a_renewal_read_after_the_lapse_it_prevents_undoes_the_churn() -> None:
    sim = _renewal_story()
    churned = sim.one(SignalKind.Churned)
    result = sim.renew(day(95), day(100), day(300), plan="pro", seats=10, mrr=990)
    assert result.status == "resequenced"
    assert sim.stage() is Stage.ADOPT and sim.account().term.end == day(300)
    assert sim.signals(SignalKind.Churned) == [] and churned.id in sim.repo.retracted
    assert len(sim.signals(SignalKind.Renewed)) == 1
    ordered = sorted((e for _, e in sim.repo.events), key=lambda e: (e.time, e.id))
    assert view(sim.repo) == view(handled(ordered))
    assert [e.id for _, e in sim.repo.events] == [e.id for e in ordered]


def test_a_late_event_after_a_sweep_is_swept_again_to_the_clock() -> None:
    sim = Sim()
    sim.start(days=100)
    sim.go_live(day(1))
    sim.sweep(day(120))  # lapsed at day 114 by the sweep
    assert sim.stage() is Stage.CHURNED
    sim.renew(day(95), day(100), day(300), plan="pro", seats=10, mrr=990)
    reference = Sim()
    for _, event in sim.repo.events:
        reference.service.handle(event)
    reference.sweep(day(120))
    assert sim.stage() is Stage.ADOPT and sim.account().clock == day(120)
    assert view(sim.repo) == view(reference.repo)


def test_a_rule_failing_in_a_rebuild_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    sim = _renewal_story()
    before = view(sim.repo)
    original = HANDLERS[EventType.SUBSCRIPTION_RENEWED]

    def failing(ctx: Ctx, event: CloudEvent) -> None:
        original(ctx, event)
        raise RuntimeError("rule failed")

    monkeypatch.setitem(HANDLERS, EventType.SUBSCRIPTION_RENEWED, failing)
    with pytest.raises(RuntimeError):
        sim.renew(day(95), day(100), day(300), plan="pro", seats=10, mrr=990)
    assert view(sim.repo) == before and sim.repo.retracted == {}
    monkeypatch.undo()
    assert sim.renew(day(95), day(100), day(300), plan="pro", seats=10, mrr=990).status \
        == "resequenced"  # not marked processed: the redelivery applies it
    assert sim.stage() is Stage.ADOPT


def test_events_parked_across_a_concurrent_landing_rebuild_the_account() -> None:
    """The parked-event sweeper drains events parked while another consumer landed it."""
    repo = InMemoryRepository()
    service = LifecycleService(repo, POLICY)
    early = parse_event(make_event("laer.usage.provisioned", "acme", day(-1), {}))
    service.handle(early)  # parked: the account does not exist yet
    parked = repo.parked.pop("acme")  # ... and not seen by the landing (another consumer)
    sim = Sim()
    sim.repo, sim.service = repo, service
    sim.start()
    sim.send("billing.invoice_paid", day(1), invoice())
    repo.parked["acme"] = parked
    assert [o.account.stage for o in service.apply_parked("acme")] == [Stage.ADOPT]
    assert view(repo) == view(handled(sorted((e for _, e in repo.events),
                                             key=lambda e: (e.time, e.id))))
