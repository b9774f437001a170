"""EventBatch: one working copy per account per batch, same effects as `handle` per event."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import test_domain_properties as props
from domain_sim import T0, day, invoice, started_data
from hypothesis import given
from hypothesis import strategies as st

import laer_domain.service as service_module
from laer_domain import (
    Account,
    CloudEvent,
    EventType,
    InMemoryRepository,
    LifecycleService,
    Policy,
    apply_event,
    apply_event_in_place,
    copy_account,
    make_event,
    parse_event,
)
from laer_domain.handlers import HANDLERS
from laer_domain.lifecycle import Ctx

POLICY = Policy()


def ev(kind: str, at: Any, data: dict[str, Any] | None = None, *, account: str = "acme",
       id: str | None = None) -> CloudEvent:
    return parse_event(make_event(f"laer.{kind}", account, at, data or {}, id=id))


def recorded(repo: InMemoryRepository) -> dict[str, Any]:
    """Everything a repository holds, in comparable form."""
    return {
        "accounts": {k: a.model_dump(mode="json") for k, a in repo.accounts.items()},
        "signals": list(repo.signals),
        "stage_changes": list(repo.stage_changes),
        "health_changes": list(repo.health_changes),
        "events": list(repo.events),
        "processed": dict(repo.processed),
        "parked": {k: [e for e, _ in v] for k, v in repo.parked.items()},
    }


def outcome(handle: Any, event: CloudEvent) -> tuple[str, Any]:
    """(status, signals) of handling `event`, or ("error", message) when a rule raised."""
    try:
        result = handle(event)
    except RuntimeError as exc:
        return ("error", str(exc))
    return (result.status, result.signals)


def one_by_one(events: list[CloudEvent], repo: InMemoryRepository | None = None,
               ) -> tuple[InMemoryRepository, list[tuple[str, Any]]]:
    repo = repo or InMemoryRepository()
    service = LifecycleService(repo, POLICY)
    return repo, [outcome(service.handle, event) for event in events]


class OwnedRepository(InMemoryRepository):
    """Hands out its accounts to be changed in place, as the consumer's batch store does.

    `begin` stores each account as text, as a row would hold it at the start of a batch;
    `reload` parses it from there again.
    """

    stored: dict[str, str]

    def begin(self) -> None:
        self.stored = {k: a.model_dump_json() for k, a in self.accounts.items()}

    def reload(self, account_id: str) -> Account | None:
        state = self.stored.get(account_id)
        if state is None:
            self.accounts.pop(account_id, None)
            return None
        account = Account.model_validate_json(state)
        self.accounts[account_id] = account
        return account


def batched(events: list[CloudEvent], cuts: list[int], repo: InMemoryRepository | None = None,
            owned: bool = False) -> tuple[InMemoryRepository, list[tuple[str, Any]]]:
    """The events in batches ending at `cuts`; an error skips its event, the batch goes on.

    `owned`: the repository's accounts are changed in place (`batch(reload=...)`).
    """
    repo = repo or (OwnedRepository() if owned else InMemoryRepository())
    service = LifecycleService(repo, POLICY)
    results = []
    bounds = sorted({0, len(events), *(c for c in cuts if 0 < c < len(events))})
    for start, end in zip(bounds, bounds[1:], strict=False):
        if isinstance(repo, OwnedRepository):
            repo.begin()
            batch = service.batch(reload=repo.reload)
        else:
            batch = service.batch()
        results.extend(outcome(batch.handle, event) for event in events[start:end])
    return repo, results


@st.composite
def workloads(draw: st.DrawFn) -> tuple[list[CloudEvent], list[int]]:
    """Interleaved events of 1-3 accounts with duplicates, cut into random batches."""
    scenario = draw(props.scenarios())
    labels = [account for account, events in scenario.items() for _ in events]
    order = draw(st.permutations(labels))
    cursors = {account: iter(events) for account, events in scenario.items()}
    events = [next(cursors[account]) for account in order]
    for _ in range(draw(st.integers(0, 4))):  # redeliveries, earlier or later in the stream
        events.insert(draw(st.integers(0, len(events))), draw(st.sampled_from(events)))
    cuts = draw(st.lists(st.integers(0, len(events)), max_size=4))
    return events, cuts


@pytest.mark.parametrize("owned", [False, True], ids=["copied", "in-place"])
@props.SETTINGS
@given(workload=workloads())
def test_batches_equal_one_event_at_a_time(workload: tuple[list[CloudEvent], list[int]],
                                           owned: bool) -> None:
    events, cuts = workload
    expected_repo, expected = one_by_one(events)
    actual_repo, actual = batched(events, cuts, owned=owned)
    assert actual == expected
    assert recorded(actual_repo) == recorded(expected_repo)
    assert actual_repo.accounts == expected_repo.accounts


def test_an_account_is_copied_once_per_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    repo = InMemoryRepository()
    service = LifecycleService(repo, POLICY)
    for account in ("a", "b"):
        service.handle(ev("billing.subscription_started", T0, started_data(), account=account))
    before = {k: a.model_dump(mode="json") for k, a in repo.accounts.items()}
    originals = dict(repo.accounts)
    copies: list[str] = []

    def counting(account: Account) -> Account:
        copies.append(account.id)
        return copy_account(account)

    monkeypatch.setattr(service_module, "copy_account", counting)
    batch = service.batch()
    for n in range(1, 6):
        for account in ("a", "b"):
            batch.handle(ev("support.ticket_opened", day(n), {"ticket_id": f"t{n}",
                                                              "priority": "low"},
                            account=account))
    batch.handle(ev("billing.subscription_started", T0, started_data(), account="c"))
    batch.handle(ev("billing.invoice_paid", day(1), invoice(), account="c"))
    assert sorted(copies) == ["a", "b"]  # "c" was created in the batch: nothing to copy
    # what the repository held before the batch is left as it was
    assert {k: a.model_dump(mode="json") for k, a in originals.items()} == before
    assert repo.accounts["a"] is not originals["a"]
    assert set(repo.accounts["a"].open_tickets) == {f"t{n}" for n in range(1, 6)}


def _failing_handler(monkeypatch: pytest.MonkeyPatch, bad_ids: set[str]) -> None:
    """Tickets whose event id is in `bad_ids` change the account, then their rule fails."""
    original = HANDLERS[EventType.TICKET_OPENED]

    def handler(ctx: Ctx, event: CloudEvent) -> None:
        original(ctx, event)
        if event.id in bad_ids:
            ctx.account.failed_payments = 99
            ctx.account.open_tickets["half-applied"] = "urgent"
            raise RuntimeError(f"rule failed on {event.id}")

    monkeypatch.setitem(HANDLERS, EventType.TICKET_OPENED, handler)


def _stream() -> list[CloudEvent]:
    return [
        ev("usage.provisioned", T0 - timedelta(hours=1), id="early"),  # parked, then drained
        ev("billing.subscription_started", T0, started_data(), id="start"),
        ev("billing.invoice_paid", day(1), invoice(), id="paid"),
        ev("support.ticket_opened", day(2), {"ticket_id": "t1", "priority": "high"}, id="t1"),
        ev("billing.subscription_started", T0, started_data(), account="other", id="o-start"),
        ev("support.ticket_opened", day(3), {"ticket_id": "t2", "priority": "low"}, id="bad"),
        ev("billing.invoice_paid", day(1), invoice(), id="paid"),  # a duplicate
        ev("support.ticket_opened", day(4), {"ticket_id": "t3", "priority": "low"}, id="t3"),
        ev("support.ticket_resolved", day(5), {"ticket_id": "t1"}, id="r1"),
    ]


@pytest.mark.parametrize("owned", [False, True], ids=["copied", "in-place"])
@pytest.mark.parametrize("cuts", [[], [3]], ids=["lands-in-the-batch", "landed-before"])
def test_a_failing_rule_leaves_no_half_applied_account(monkeypatch: pytest.MonkeyPatch,
                                                       owned: bool, cuts: list[int]) -> None:
    _failing_handler(monkeypatch, {"bad"})
    events = _stream()
    expected_repo, expected = one_by_one(events)
    assert ("error", "rule failed on bad") in expected
    actual_repo, actual = batched(events, cuts, owned=owned)
    assert actual == expected
    assert recorded(actual_repo) == recorded(expected_repo)
    acme = actual_repo.accounts["acme"]
    assert "half-applied" not in acme.open_tickets and acme.failed_payments == 0
    assert set(acme.open_tickets) == {"t3"}


def test_right_after_a_failure_the_account_is_as_before_the_event(
        monkeypatch: pytest.MonkeyPatch) -> None:
    events = _stream()
    bad = next(i for i, e in enumerate(events) if e.id == "bad")
    reference, _ = one_by_one(events[:bad])
    _failing_handler(monkeypatch, {"bad"})
    repo = InMemoryRepository()
    batch = LifecycleService(repo, POLICY).batch()
    for event in events[:bad]:
        batch.handle(event)
    with pytest.raises(RuntimeError):
        batch.handle(events[bad])
    assert recorded(repo) == recorded(reference)
    assert not repo.is_processed(events[bad].key)  # not handled: a redelivery applies it


def test_a_failure_after_a_landing_in_the_batch_replays_the_landing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    repo = InMemoryRepository()
    batch = LifecycleService(repo, POLICY).batch()
    _failing_handler(monkeypatch, {"t-bad"})
    batch.handle(ev("billing.subscription_started", T0, started_data()))
    with pytest.raises(RuntimeError):
        batch.handle(ev("support.ticket_opened", day(1), {"ticket_id": "x", "priority": "low"},
                        id="t-bad"))
    assert repo.accounts["acme"].open_tickets == {}
    batch.handle(ev("support.ticket_opened", day(2), {"ticket_id": "y", "priority": "low"}))
    assert set(repo.accounts["acme"].open_tickets) == {"y"}


def test_apply_event_in_place_chains_like_apply_event() -> None:
    events = [e for e in _stream() if e.account_id == "acme" and e.id not in ("early",)]
    copied = None
    in_place = None
    for event in events:
        copied = apply_event(copied, event, POLICY).account
        in_place = apply_event_in_place(in_place, event, POLICY).account
    assert in_place == copied and in_place is not None
    assert in_place.model_dump(mode="json") == copied.model_dump(mode="json")


def test_parse_event_builds_what_validation_builds() -> None:
    for wire in (
        make_event("laer.billing.subscription_started", "acme", T0,
                   started_data(goals=[{"key": "g", "target": "2.50"}],
                                contacts=[{"email": "a@b.example"}])),
        make_event("laer.usage.active_users", "acme", T0, {"date": "2025-01-01", "count": 3}),
    ):
        parsed = parse_event(wire)
        validated = CloudEvent.model_validate(wire)
        assert parsed == validated
        assert parsed.model_fields_set == validated.model_fields_set
        assert parsed.model_dump_json() == validated.model_dump_json()
        assert CloudEvent.model_validate(parsed.model_dump(mode="json")) == parsed
