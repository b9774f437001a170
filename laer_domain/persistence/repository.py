"""SQLAlchemy implementation of the lifecycle repository, plus the consumer's offset ledger."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from laer_domain.events import CloudEvent
from laer_domain.model import Account, Stage
from laer_domain.persistence.tables import (
    AccountRow,
    AppliedEventRow,
    ConsumerOffsetRow,
    HealthChangeRow,
    OutboxRow,
    ParkedEventRow,
    ProcessedEventRow,
    SignalRow,
    StageChangeRow,
)

if TYPE_CHECKING:
    from laer_domain.rules import Outcome


def _utcnow() -> datetime:
    # Processing time for bookkeeping columns only; domain rules never see it.
    return datetime.now(UTC)


class SqlLifecycleRepository:
    """Accounts, their timelines and the dedup ledger, inside the caller's session."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._lock = session.get_bind().dialect.name == "postgresql"

    def get(self, account_id: str) -> Account | None:
        """Load an account (row-locked on PostgreSQL so concurrent consumers serialise)."""
        row = self.session.get(AccountRow, account_id, with_for_update=self._lock or None)
        return None if row is None else Account.model_validate(row.state)

    def add_or_update(self, account: Account) -> None:
        """Insert or update an account's state and its read-side columns."""
        state = account.model_dump(mode="json")
        row = self.session.get(AccountRow, account.id)
        health = account.health
        if row is None:
            row = AccountRow(id=account.id)
            self.session.add(row)
        row.stage = account.stage.value
        row.stage_since = account.stage_since
        row.owner = account.owner.value
        row.health_score = health.score if health else None
        row.health_band = health.band if health else None
        row.state = state
        row.updated_at = _utcnow()
        self.session.flush([row])

    def is_processed(self, key: tuple[str, str]) -> bool:
        """Whether an event with this (source, id) was handled before."""
        source, event_id = key
        return self.session.get(ProcessedEventRow, (source, event_id)) is not None

    def mark_processed(self, key: tuple[str, str], account_id: str) -> None:
        """Record an event's identity so a redelivery changes nothing."""
        source, event_id = key
        self.session.add(ProcessedEventRow(source=source, event_id=event_id,
                                           account_id=account_id, processed_at=_utcnow()))

    def park(self, event: CloudEvent, origin: Mapping[str, Any] | None) -> None:
        """Keep an event for an account that has not landed yet."""
        self.session.add(ParkedEventRow(
            account_id=event.account_id, event_time=event.time,
            event=event.model_dump(mode="json"), origin=dict(origin) if origin else None,
            parked_at=_utcnow(),
        ))

    def take_parked(self, account_id: str) -> list[CloudEvent]:
        """Remove and return the events parked for an account."""
        rows = self.session.scalars(
            select(ParkedEventRow).where(ParkedEventRow.account_id == account_id)
            .order_by(ParkedEventRow.id)
        ).all()
        events = [CloudEvent.model_validate(r.event) for r in rows]
        for r in rows:
            self.session.delete(r)
        return events

    def record(self, outcome: Outcome) -> None:
        """Append signals (each also queued in the outbox), stage and health changes."""
        for change in outcome.stage_changes:
            self.session.add(StageChangeRow(
                account_id=change.account_id, from_stage=change.from_stage.value
                if change.from_stage else None, to_stage=change.to_stage.value, at=change.at,
                reason=change.reason, event_id=change.event_id))
        for health in outcome.health_changes:
            self.session.add(HealthChangeRow(
                account_id=health.account_id, at=health.at, score=health.score,
                band=health.band, components=dict(health.components)))
        if outcome.signals:
            self.session.flush()
            seq = self._next_signal_seq()
        for signal in outcome.signals:
            if self.session.get(SignalRow, signal.id) is not None:
                continue  # re-derived signal: already stored and queued once
            self.session.add(SignalRow(
                id=signal.id, seq=seq, account_id=signal.account_id, kind=signal.kind.value,
                at=signal.at, stage=signal.stage.value,
                evidence=signal.evidence.model_dump(mode="json")))
            self.session.flush()  # the outbox row refers to it
            self.session.add(OutboxRow(signal_id=signal.id, account_id=signal.account_id,
                                       kind=signal.kind.value, created_at=_utcnow()))
            seq += 1

    def _next_signal_seq(self) -> int:
        current = self.session.scalar(select(func.max(SignalRow.seq)))
        return int(current or 0) + 1

    def record_event(self, event: CloudEvent, account_id: str) -> None:
        """Append an event to the account's timeline."""
        self.session.add(AppliedEventRow(
            account_id=account_id, event_id=event.id, source=event.source, type=event.type,
            time=event.time, data=event.data.model_dump(mode="json")))

    def live_account_ids(self) -> list[str]:
        """Accounts that time-based rules still concern (not churned)."""
        return list(self.session.scalars(
            select(AccountRow.id).where(AccountRow.stage != Stage.CHURNED.value)
            .order_by(AccountRow.id)))

    def landed_ids_with_parked(self) -> list[str]:
        """Accounts that exist yet still have parked events (a concurrent-landing race)."""
        return list(self.session.scalars(
            select(ParkedEventRow.account_id).join(
                AccountRow, AccountRow.id == ParkedEventRow.account_id).distinct()))

    def expired_parked(self, older_than: datetime) -> list[ParkedEventRow]:
        """Parked events nobody claimed within the park window."""
        return list(self.session.scalars(
            select(ParkedEventRow).where(ParkedEventRow.parked_at < older_than)
            .order_by(ParkedEventRow.id)))

    def delete_parked(self, ids: Iterable[int]) -> None:
        """Forget parked events (after they went to the dead-letter topic)."""
        self.session.execute(delete(ParkedEventRow).where(ParkedEventRow.id.in_(list(ids))))


class OffsetLedger:
    """Consumed offsets stored in the same transaction as the state they produced."""

    def __init__(self, session: Session, group_id: str) -> None:
        self.session = session
        self.group_id = group_id
        self._lock = session.get_bind().dialect.name == "postgresql"

    def lock(self, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """Read (and on PostgreSQL lock, in a fixed order) the next offsets of partitions."""
        result: dict[tuple[str, int], int] = {}
        for topic, partition in sorted(set(partitions)):
            row = self.session.get(ConsumerOffsetRow, (self.group_id, topic, partition),
                                   with_for_update=self._lock or None)
            if row is not None:
                result[(topic, partition)] = row.next_offset
        return result

    def advance(self, topic: str, partition: int, next_offset: int) -> None:
        """Move a partition's next offset forward (never backward)."""
        row = self.session.get(ConsumerOffsetRow, (self.group_id, topic, partition))
        if row is None:
            self.session.add(ConsumerOffsetRow(group_id=self.group_id, topic=topic,
                                               partition=partition, next_offset=next_offset))
        elif next_offset > row.next_offset:
            row.next_offset = next_offset

    def stored(self) -> dict[tuple[str, int], int]:
        """Every stored next offset of this group."""
        rows = self.session.scalars(
            select(ConsumerOffsetRow).where(ConsumerOffsetRow.group_id == self.group_id))
        return {(r.topic, r.partition): r.next_offset for r in rows}
