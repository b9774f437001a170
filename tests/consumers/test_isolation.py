"""A record that cannot be applied is found, retried alone, dead-lettered with reason
`processing_error`, and the rest of its batch commits; an outage holds the batch back instead
(issue 12). `Ingestor` over SQLite and PostgreSQL, no broker."""

from __future__ import annotations

import sqlite3

import psycopg
import pytest
from kafka.errors import KafkaTimeoutError
from sqlalchemy import Engine, select
from sqlalchemy.exc import DBAPIError, OperationalError, PendingRollbackError

import laer_domain.events as events_module
from consumers.dlq import EXCEPTION, REASON, TRUNCATED, DeadLetter, fitted
from consumers.failures import classify
from laer_domain.events import CloudEvent, EventType
from laer_domain.handlers import HANDLERS
from laer_domain.lifecycle import Ctx
from persistence.batch_repository import ConcurrentUpdate
from persistence.tables import ParkedEventRow
from persistence.uow import UnitOfWork, session_factory
from tests.consumers.offline import (
    Feed,
    Letters,
    applied_ids,
    ingestor,
    start,
    stored_offsets,
    ticket,
    wire,
)


def poison_tickets(monkeypatch: pytest.MonkeyPatch, times: int | None = None) -> list[int]:
    """Opening ticket "poison" raises in the rules (`times` times, or always)."""
    original = HANDLERS[EventType.TICKET_OPENED]
    raised = [0]

    def failing(ctx: Ctx, event: CloudEvent) -> None:
        original(ctx, event)
        if event.data.model_dump().get("ticket_id") == "poison" and (
                times is None or raised[0] < times):
            raised[0] += 1
            raise OverflowError("date value out of range")

    monkeypatch.setitem(HANDLERS, EventType.TICKET_OPENED, failing)
    return raised


def test_a_record_the_rules_cannot_apply_is_dead_lettered_and_the_batch_commits(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    raised = poison_tickets(monkeypatch)
    feed, letters = Feed(), Letters()
    good = [start("a"), start("b"), ticket("a", 1), ticket("b", 1)]
    poison = ticket("a", 2, "poison")
    after = [ticket("a", 3), ticket("b", 3)]
    recs = [feed.event(e) for e in good] + [feed.event(poison)] + [
        feed.event(e) for e in after]
    report = ingestor(engine, letters, record_attempts=3).process(recs)

    assert [(dl.record, dl.reason, dl.exception) for dl in letters.sent] == [
        (recs[4], "processing_error", "OverflowError")]
    assert letters.sent[0].message == "date value out of range"
    assert report.dead_letters == letters.sent
    assert raised[0] == 1 + 3  # in the batch, then alone `record_attempts` times
    assert applied_ids(engine) == {e["id"] for e in good + after}
    assert stored_offsets(engine) == feed.offsets  # every partition is at its end
    key, value, headers = fitted(letters.sent[0], 1_048_576)
    assert (key, value) == (recs[4].key, recs[4].value)
    assert (REASON, b"processing_error") in headers
    assert (EXCEPTION, b"OverflowError") in headers


def test_a_record_failing_once_is_applied_on_its_retry(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    raised = poison_tickets(monkeypatch, times=1)
    feed, letters = Feed(), Letters()
    events = [start("a"), ticket("a", 1, "poison"), ticket("a", 2)]
    report = ingestor(engine, letters).process([feed.event(e) for e in events])
    assert raised[0] == 1 and not letters.sent
    assert report.record_failures == 1
    assert applied_ids(engine) == {e["id"] for e in events}


def test_a_failure_at_write_time_is_found_by_halving_the_batch(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without validation, a lone surrogate in an id fails only when the batch is written."""
    monkeypatch.setattr(events_module, "storable_text", lambda _value: True)
    feed, letters = Feed(), Letters()
    good = [start("a"), *[ticket("a", n) for n in range(1, 12)]]
    bad = wire("support.ticket_opened", "a", 6.5, {"ticket_id": "x", "priority": "low"},
               id="bad-\ud800")
    recs = [feed.event(e) for e in good[:7]] + [feed.event(bad)] + [
        feed.event(e) for e in good[7:]]
    report = ingestor(engine, letters).process(recs)
    assert [(dl.record, dl.reason) for dl in letters.sent] == [(recs[7], "processing_error")]
    assert letters.sent[0].exception
    assert report.applied == len(good)
    assert applied_ids(engine) == {e["id"] for e in good}
    assert stored_offsets(engine) == feed.offsets


def test_an_outage_holds_the_batch_back_and_dead_letters_nothing(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    feed, letters = Feed(), Letters()
    events = [start("a"), ticket("a", 1)]
    recs = [feed.event(e) for e in events]
    ing = ingestor(engine, letters)
    original = UnitOfWork.commit

    def down(self: UnitOfWork) -> None:
        raise OperationalError("COMMIT", {}, Exception("server closed the connection"))

    monkeypatch.setattr(UnitOfWork, "commit", down)
    with pytest.raises(OperationalError):
        ing.process(recs)
    assert not letters.sent and not stored_offsets(engine)
    monkeypatch.setattr(UnitOfWork, "commit", original)
    ing.process(recs)  # redelivered once the database is back
    assert applied_ids(engine) == {e["id"] for e in events} and not letters.sent


def test_a_parked_event_the_rules_would_reject_is_dead_lettered_on_arrival(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    poison_tickets(monkeypatch)
    feed, letters = Feed(), Letters()
    early = [ticket("c", 1), ticket("c", 2, "poison")]  # before the account lands
    ing = ingestor(engine, letters)
    ing.process([feed.event(e) for e in early])
    assert [(dl.record.value, dl.reason) for dl in letters.sent] == [
        (Feed().event(early[1]).value, "processing_error")]
    with session_factory(engine)() as s:
        assert len(s.scalars(select(ParkedEventRow.id)).all()) == 1  # only the good one
    landing = start("c")
    ing.process([feed.event(landing)])  # the account lands, with its parked event
    assert applied_ids(engine) == {landing["id"], early[0]["id"]}


def test_a_landing_that_fails_on_a_parked_event_lands_without_it(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """A parked event the rules reject only once the real account lands (it passed on the
    stand-in account on arrival): it is dead-lettered, and the account lands all the same."""
    feed, letters = Feed(), Letters()
    ing = ingestor(engine, letters)
    early = [ticket("e", 1), ticket("e", 2, "poison")]
    ing.process([feed.event(e) for e in early])  # parked; the rules are still fine
    assert not letters.sent
    poison_tickets(monkeypatch)  # from now on the rules cannot apply "poison"
    landing = start("e")
    ing.process([feed.event(landing)])
    assert [(dl.reason, dl.exception) for dl in letters.sent] == [
        ("processing_error", "OverflowError")]
    assert letters.sent[0].record.value == Feed().event(early[1]).value
    assert applied_ids(engine) == {landing["id"], early[0]["id"]}
    with session_factory(engine)() as s:
        assert not s.scalars(select(ParkedEventRow.id)).all()


def test_a_copy_that_would_not_fit_is_cut_with_a_header_saying_so() -> None:
    big = Feed().raw("t.billing", b"a", b"x" * 1_048_000, (("content-type", b"json"),))
    letter = DeadLetter(big, "oversized", "record is 1048000 bytes")
    key, value, headers = fitted(letter, 1_048_576)
    size = len(key or b"") + len(value or b"") + sum(len(k) + len(v) for k, v in headers)
    assert size <= 1_048_576 - 512
    assert value is not None and big.value is not None and big.value.startswith(value)
    assert dict(headers)[TRUNCATED].startswith(b"value cut from 1048000 to ")
    assert dict(headers)["laer.errors.offset"] == str(big.offset).encode()
    assert dict(headers)["laer.errors.topic"] == b"t.billing"


def _wrapped(error: BaseException) -> DBAPIError:
    return DBAPIError.instance("SELECT 1", None, error, type(error))  # type: ignore[arg-type]


@pytest.mark.parametrize("error,kind", [
    (_wrapped(psycopg.errors.lookup("08006")("connection failure")), "database"),
    (_wrapped(psycopg.errors.lookup("55000")("not accepting connections")), "database"),
    (_wrapped(psycopg.errors.lookup("57014")("statement timeout")), "database"),
    (_wrapped(psycopg.OperationalError("connection refused")), "database"),
    (_wrapped(sqlite3.OperationalError("unable to open database file")), "database"),
    (_wrapped(sqlite3.OperationalError("database is locked")), "database"),
    (_wrapped(psycopg.errors.lookup("40001")("could not serialize")), "conflict"),
    (_wrapped(psycopg.errors.lookup("23505")("duplicate key")), "conflict"),
    (_wrapped(sqlite3.IntegrityError("UNIQUE constraint failed: accounts.id")), "conflict"),
    (_wrapped(psycopg.errors.lookup("22001")("value too long")), "record"),
    (_wrapped(psycopg.errors.lookup("22P05")("unsupported Unicode escape")), "record"),
    (_wrapped(sqlite3.IntegrityError("NOT NULL constraint failed: x.y")), "record"),
    (psycopg.errors.lookup("22021")("invalid byte sequence"), "record"),
    (psycopg.OperationalError("server closed the connection"), "database"),
    (PendingRollbackError("rolled back"), "database"), (ConcurrentUpdate("x"), "conflict"),
    (KafkaTimeoutError("flush"), "broker"), (OverflowError("date"), "record"),
    (RecursionError(), "record"), (UnicodeEncodeError("utf-8", "\ud800", 0, 1, "x"), "record"),
    (IsADirectoryError("America"), "record"),
])
def test_failures_are_told_apart(error: BaseException, kind: str) -> None:
    assert classify(error) == kind
