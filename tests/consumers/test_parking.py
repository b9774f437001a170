"""Parked events that no account claims: dead-lettered once, even with consumers sweeping side
by side, and replayable afterwards (their processed mark goes with them); one the rules
cannot apply when its account exists is dead-lettered instead of failing every sweep (issue
12). `Ingestor` and `ParkedSweeper` over SQLite and PostgreSQL, no broker."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, func, select

from consumers.dlq import DeadLetter
from consumers.parking import EXPIRY_CHUNK, ParkedSweeper
from laer_domain.events import CloudEvent, EventType, parse_event
from laer_domain.handlers import HANDLERS
from laer_domain.lifecycle import Ctx
from laer_domain.policy import Policy
from persistence.tables import ParkedEventRow, ProcessedEventRow
from persistence.uow import UnitOfWork, session_factory
from tests.consumers.offline import Feed, Letters, applied_ids, ingestor, start, ticket

WINDOW = timedelta(days=7)


def later() -> datetime:
    return datetime.now(UTC) + WINDOW + timedelta(hours=1)


def sweeper(engine: Engine, letters: Letters | None = None, clock: object = later,
            sink: object = None) -> ParkedSweeper:
    return ParkedSweeper(session_factory(engine), Policy(), WINDOW,
                         sink or letters or Letters(), clock)  # type: ignore[arg-type]


def count(engine: Engine, table: type[ParkedEventRow] | type[ProcessedEventRow]) -> int:
    with session_factory(engine)() as s:
        return int(s.scalar(select(func.count()).select_from(table)) or 0)


def test_an_expired_event_can_be_replayed_and_redelivered(engine: Engine) -> None:
    feed, letters = Feed(), Letters()
    early = ticket("ghost", 1)
    ing = ingestor(engine, letters)
    ing.process([feed.event(early)])
    assert count(engine, ParkedEventRow) == 1
    expiry = Letters()
    assert sweeper(engine, expiry).run() == (0, 1)
    assert [dl.reason for dl in expiry.sent] == ["unknown_account"]
    assert count(engine, ParkedEventRow) == 0
    assert count(engine, ProcessedEventRow) == 0  # the mark went with the parked row
    landing = start("ghost")
    ing.process([feed.event(landing), feed.event(early)])  # the replay, or a redelivery
    assert applied_ids(engine) == {landing["id"], early["id"]}
    assert not letters.sent


def test_sweepers_side_by_side_dead_letter_each_expired_event_once(engine: Engine) -> None:
    feed = Feed()
    ing = ingestor(engine, Letters())
    total = EXPIRY_CHUNK + 50  # more than one chunk
    ing.process([feed.event(ticket(f"ghost-{n}", 1)) for n in range(total)])
    sent: list[DeadLetter] = []
    second_done = threading.Event()
    first_holds = threading.Event()

    def first_sink(letters: list[DeadLetter]) -> None:
        sent.extend(letters)
        if not first_holds.is_set():
            first_holds.set()
            # hold the first chunk's rows while the other sweeper runs (it cannot finish on
            # SQLite, whose transactions take the write lock up front: the wait ends there)
            second_done.wait(timeout=5)

    first = threading.Thread(target=sweeper(engine, sink=first_sink).run)
    first.start()
    assert first_holds.wait(timeout=60)
    sweeper(engine, sink=sent.extend).run()
    second_done.set()
    first.join(timeout=120)
    assert not first.is_alive()
    offsets = [(dl.record.topic, dl.record.partition, dl.record.offset) for dl in sent]
    assert len(offsets) == total and len(set(offsets)) == total
    assert count(engine, ParkedEventRow) == 0


def test_a_parked_event_the_rules_reject_after_landing_is_dead_lettered_not_retried_forever(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    feed, letters = Feed(), Letters()
    ing = ingestor(engine, letters)
    landing = start("d")
    ing.process([feed.event(landing)])
    raced = parse_event(ticket("d", 2, "poison"))  # parked by a consumer that raced the landing
    with UnitOfWork(session_factory(engine)) as uow:
        uow.accounts.park(raced, feed.event(ticket("d", 2, "poison")).origin())
        uow.accounts.mark_processed(raced.key, "d")
        uow.commit()
    original = HANDLERS[EventType.TICKET_OPENED]

    def failing(ctx: Ctx, event: CloudEvent) -> None:
        original(ctx, event)
        if event.id == raced.id:
            raise OverflowError("date value out of range")

    monkeypatch.setitem(HANDLERS, EventType.TICKET_OPENED, failing)
    swept = Letters()
    assert sweeper(engine, swept, clock=lambda: datetime.now(UTC)).run() == (0, 1)
    assert [(dl.reason, dl.exception) for dl in swept.sent] == [
        ("processing_error", "OverflowError")]
    assert count(engine, ParkedEventRow) == 0
    assert applied_ids(engine) == {landing["id"]}
    with session_factory(engine)() as s:  # replayable once fixed
        assert s.get(ProcessedEventRow, (raced.source, raced.id)) is None
