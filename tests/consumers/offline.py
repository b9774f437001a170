"""The consumer's ingestion without a broker: records as Kafka would hold them, an `Ingestor`
over a real database, and a dead-letter sink that keeps what it was given."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select

from consumers.dlq import DeadLetter
from consumers.ingest import Ingestor
from consumers.records import RawRecord
from consumers.settings import ConsumerSettings
from laer.publish import Mode, encode
from laer_domain.events import event_family, make_event
from laer_domain.policy import Policy
from persistence.tables import AppliedEventRow, ConsumerOffsetRow
from persistence.uow import session_factory

FAMILIES = {"t.billing": "billing", "t.usage": "usage", "t.support": "support"}
TOPICS = {family: topic for topic, family in FAMILIES.items()}
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


@dataclass
class Letters:
    """A dead-letter sink that keeps every letter it was handed."""

    sent: list[DeadLetter] = field(default_factory=list)

    def __call__(self, letters: list[DeadLetter]) -> None:
        self.sent.extend(letters)


@dataclass
class Feed:
    """Records with per-partition offsets, as the topics would hold them."""

    offsets: dict[tuple[str, int], int] = field(default_factory=dict)

    def raw(self, topic: str, key: bytes | None, value: bytes | None,
            headers: tuple[tuple[str, bytes], ...] = (), partition: int | None = None
            ) -> RawRecord:
        p = zlib.crc32(key or b"") % 4 if partition is None else partition
        offset = self.offsets.get((topic, p), 0)
        self.offsets[(topic, p)] = offset + 1
        return RawRecord(topic, p, offset, key, value, headers)

    def event(self, event: dict[str, Any], mode: Mode = "structured") -> RawRecord:
        key, value, headers = encode(event, mode)
        return self.raw(TOPICS[event_family(event["type"])], key, value, tuple(headers))


def ingestor(engine: Engine, letters: Letters, clock: Any = None, **limits: Any) -> Ingestor:
    return Ingestor(session_factory(engine), Policy(), "g", FAMILIES, ConsumerSettings(**limits),
                    letters, clock or (lambda: datetime.now(UTC)))


def wire(kind: str, account: str, hours: float, data: dict[str, Any],
         **attrs: Any) -> dict[str, Any]:
    event = make_event(f"laer.{kind}", account, T0 + timedelta(hours=hours), data)
    return {**event, **attrs}


def start(account: str, **data: Any) -> dict[str, Any]:
    return wire("billing.subscription_started", account, 0, {
        "plan": "team", "seats": 10, "mrr": "900", "currency": "EUR",
        "term_start": "2026-03-02", "term_end": "2027-03-02", **data})


def ticket(account: str, n: int, ticket_id: str | None = None) -> dict[str, Any]:
    return wire("support.ticket_opened", account, n,
                {"ticket_id": ticket_id or f"t{n}", "priority": "low"})


def applied_ids(engine: Engine) -> set[str]:
    with session_factory(engine)() as s:
        return set(s.scalars(select(AppliedEventRow.event_id)))


def stored_offsets(engine: Engine) -> dict[tuple[str, int], int]:
    with session_factory(engine)() as s:
        return {(r.topic, r.partition): r.next_offset
                for r in s.scalars(select(ConsumerOffsetRow))}
