"""SQLAlchemy 2 typed ORM tables; the schema itself is created by the Alembic migrations."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC and always returns aware datetimes, on SQLite as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON()}


class AccountRow(Base):
    __tablename__ = "accounts"
    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    stage: Mapped[str] = mapped_column(String(16), index=True)
    stage_since: Mapped[datetime]
    owner: Mapped[str] = mapped_column(String(32))
    health_score: Mapped[int | None]
    health_band: Mapped[str | None] = mapped_column(String(8))
    state: Mapped[dict[str, Any]]
    updated_at: Mapped[datetime]
    # Optimistic lock: two consumers updating one account from different topics cannot both win.
    version: Mapped[int] = mapped_column(Integer, default=1)
    __mapper_args__ = {"version_id_col": version}


class StageChangeRow(Base):
    __tablename__ = "stage_changes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    from_stage: Mapped[str | None] = mapped_column(String(16))
    to_stage: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime]
    reason: Mapped[str] = mapped_column(String(64))
    event_id: Mapped[str | None] = mapped_column(String(256))


class HealthChangeRow(Base):
    __tablename__ = "health_changes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    at: Mapped[datetime]
    score: Mapped[int]
    band: Mapped[str] = mapped_column(String(8))
    components: Mapped[dict[str, Any]]


class SignalRow(Base):
    __tablename__ = "signals"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, index=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    at: Mapped[datetime]
    stage: Mapped[str] = mapped_column(String(16))
    evidence: Mapped[dict[str, Any]]
    # set when a rebuild of the account (a late event) no longer raises it; never dispatched
    retracted_at: Mapped[datetime | None]


class AppliedEventRow(Base):
    """The per-account timeline of events applied (or recorded) on the account."""

    __tablename__ = "applied_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(String(128), index=True)
    event_id: Mapped[str] = mapped_column(String(256))
    source: Mapped[str] = mapped_column(String(256))
    type: Mapped[str] = mapped_column(String(64))
    time: Mapped[datetime]
    data: Mapped[dict[str, Any]]


class ProcessedEventRow(Base):
    """Dedup ledger: CloudEvents identity is (source, id)."""

    __tablename__ = "processed_events"
    source: Mapped[str] = mapped_column(String(256), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(128))
    processed_at: Mapped[datetime]


class ParkedEventRow(Base):
    """Events for accounts that have not landed yet, kept until they land or the window ends."""

    __tablename__ = "parked_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(String(128), index=True)
    event_time: Mapped[datetime]
    event: Mapped[dict[str, Any]]
    origin: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    parked_at: Mapped[datetime] = mapped_column(index=True)


class ConsumerOffsetRow(Base):
    """Next offset to read per partition, committed with the state it produced."""

    __tablename__ = "consumer_offsets"
    group_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    topic: Mapped[str] = mapped_column(String(249), primary_key=True)
    partition: Mapped[int] = mapped_column(Integer, primary_key=True)
    next_offset: Mapped[int] = mapped_column(BigInteger)


class OutboxRow(Base):
    """Signals waiting to be turned into playbook runs by the dispatcher.

    `status`: pending, done (runs started), or retracted (its signal was retracted first).
    """

    __tablename__ = "outbox"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    signal_id: Mapped[str] = mapped_column(ForeignKey("signals.id"), unique=True)
    account_id: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    done_at: Mapped[datetime | None]
    __table_args__ = (Index("ix_outbox_status_id", "status", "id"),)


class PlaybookRunRow(Base):
    """A playbook flow run started (or coalesced) for a signal."""

    __tablename__ = "playbook_runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(String(128), index=True)
    playbook: Mapped[str] = mapped_column(String(64))
    signal_id: Mapped[str] = mapped_column(String(64))
    idempotency_key: Mapped[str] = mapped_column(String(256), unique=True)
    flow_run_id: Mapped[str | None] = mapped_column(String(64))
    flow_run_name: Mapped[str | None] = mapped_column(String(256))
    state: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class PlaybookStepRow(Base):
    """One step of a playbook run, due at a wall-clock instant: the durable wait and the queue.

    `status`: due (waiting for `due_at`), running (leased by an executor until `lease_until`),
    done, or failed (gave up after its attempts; `laer` can put it back). A lease that ran
    out is taken over, so a step whose executor died runs again, with the same idempotency
    keys for its effects.
    """

    __tablename__ = "playbook_steps"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    idempotency_key: Mapped[str] = mapped_column(String(320), unique=True)
    account_id: Mapped[str] = mapped_column(String(128), index=True)
    playbook: Mapped[str] = mapped_column(String(64))
    signal_id: Mapped[str] = mapped_column(String(64), index=True)
    step: Mapped[str] = mapped_column(String(64))
    run_name: Mapped[str] = mapped_column(String(256))  # playbook/ACCOUNT/step
    tags: Mapped[list[str]] = mapped_column(JSON)
    due_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(16), default="due")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None]
    task_run_id: Mapped[str | None] = mapped_column(String(64))  # its Prefect task run
    outcome: Mapped[str | None] = mapped_column(Text)
    last_error: Mapped[str | None] = mapped_column(String(512))
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    done_at: Mapped[datetime | None]
    __table_args__ = (Index("ix_playbook_steps_status_due_at", "status", "due_at"),)


class ActionRow(Base):
    """An outbound effect of a playbook: email, webhook or task; sent, suppressed or deferred."""

    __tablename__ = "actions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    idempotency_key: Mapped[str] = mapped_column(String(256))
    account_id: Mapped[str] = mapped_column(String(128), index=True)
    playbook: Mapped[str] = mapped_column(String(64))
    flow_run_id: Mapped[str | None] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    recipient: Mapped[str | None] = mapped_column(String(256))
    role: Mapped[str | None] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(256))
    status: Mapped[str] = mapped_column(String(16), index=True)
    reason: Mapped[str | None] = mapped_column(String(256))
    due_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    payload: Mapped[dict[str, Any]]
    # Delivery retries (email, webhook): tries so far, when the next is due, what went wrong.
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(String(512))
    __table_args__ = (UniqueConstraint("idempotency_key"),)
