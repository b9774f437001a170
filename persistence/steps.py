"""The playbook-step queue: a step is a row due at an instant; executors lease due rows.

Leases make a crash harmless: a step whose executor died is taken over when its lease runs
out, and runs again with the same idempotency keys for its effects. Two executors never
hold one row at once: PostgreSQL claims with `FOR UPDATE SKIP LOCKED`, SQLite under the
write lock every transaction takes first (see persistence/db.py).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, case, exists, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from persistence.tables import PlaybookRunRow, PlaybookStepRow
from persistence.upsert import insert_if_absent

OPEN = ("due", "running")
STEP_RUNS = uuid.UUID("5f1d3c2a-4b6e-4f7a-9c1d-2e3f4a5b6c7d")  # namespace of task run ids


def task_run_id(key: str, attempt: int) -> str:
    """The Prefect task run of one attempt of a step: the same id whoever reports it."""
    return str(uuid.uuid5(STEP_RUNS, f"{key}#{attempt}"))


@dataclass(frozen=True)
class ClaimedStep:
    """A step this executor holds the lease of."""

    id: int
    key: str
    playbook: str
    account_id: str
    signal_id: str
    step: str
    tags: tuple[str, ...]
    attempts: int
    due_at: datetime


def enqueue_step(session: Session, *, key: str, playbook: str, account_id: str,
                 signal_id: str, step: str, due_at: datetime, tags: list[str],
                 run_name: str, now: datetime | None = None) -> bool:
    """Add a step unless its key exists (caller commits); whether it was added."""
    return insert_if_absent(session, PlaybookStepRow, dict(
        idempotency_key=key, playbook=playbook, account_id=account_id, signal_id=signal_id,
        step=step, run_name=run_name[:256], tags=sorted(set(tags)), due_at=due_at,
        status="due", attempts=0, created_at=now or datetime.now(UTC)),
        key=("idempotency_key",))


def claim_due(sessions: sessionmaker[Session], owner: str, limit: int, lease_s: float,
              now: datetime | None = None) -> list[ClaimedStep]:
    """Lease up to `limit` steps that are due (or whose lease ran out), earliest first."""
    now = now or datetime.now(UTC)
    row = PlaybookStepRow
    claimable = or_(and_(row.status == "due", row.due_at <= now),
                    and_(row.status == "running", row.lease_until < now))
    with sessions() as session, session.begin():
        ids = list(session.scalars(select(row.id).where(claimable).order_by(row.due_at)
                                   .limit(limit).with_for_update(skip_locked=True)))
        if not ids:
            return []
        session.execute(update(row).where(row.id.in_(ids)).values(
            status="running", lease_owner=owner, lease_until=now + timedelta(seconds=lease_s),
            attempts=row.attempts + 1, started_at=now))
        rows = session.scalars(select(row).where(row.id.in_(ids)).order_by(row.due_at))
        return [ClaimedStep(r.id, r.idempotency_key, r.playbook, r.account_id, r.signal_id,
                            r.step, tuple(r.tags or ()), r.attempts, r.due_at) for r in rows]


def finish_step(sessions: sessionmaker[Session], step: ClaimedStep, owner: str, *,
                status: str, outcome: str | None = None, error: str | None = None,
                retry_at: datetime | None = None, task_run_id: str | None = None,
                run_name: str | None = None, now: datetime | None = None) -> bool:
    """Record how a leased step ended (done, failed, or due again at `retry_at`).

    Returns False when the lease was lost meanwhile (another executor took the step over).
    The playbook run's row follows: Completed when no step of it is left open.
    """
    now = now or datetime.now(UTC)
    row = PlaybookStepRow
    # lease_owner stays: it says which executor ran the step last
    values: dict[str, object] = dict(status=status, lease_until=None,
                                     outcome=outcome, last_error=error and error[:512])
    if status == "due":
        values["due_at"] = retry_at or now
    else:
        values["done_at"] = now
    if task_run_id:
        values["task_run_id"] = task_run_id
    if run_name:
        values["run_name"] = run_name[:256]
    with sessions() as session, session.begin():
        changed = session.execute(update(row).where(
            row.id == step.id, row.lease_owner == owner, row.status == "running"
        ).values(**values).returning(row.id)).first()
        if changed is None:
            return False
        # one statement: the run is Running while a step of it is open, else it has ended
        still_open = exists().where(row.playbook == step.playbook,
                                    row.signal_id == step.signal_id, row.status.in_(OPEN))
        ended = "Failed" if status == "failed" else "Completed"
        session.execute(update(PlaybookRunRow).where(
            PlaybookRunRow.playbook == step.playbook,
            PlaybookRunRow.signal_id == step.signal_id,
            PlaybookRunRow.state.not_in(("Coalesced",))).values(
                state=case((still_open, "Running"), else_=ended), updated_at=now))
    return True


def requeue_failed(sessions: sessionmaker[Session], ids: list[int] | None = None,
                   now: datetime | None = None) -> int:
    """Put failed steps (`ids`, or all) back in the queue, due now, with a fresh count."""
    now = now or datetime.now(UTC)
    stmt = update(PlaybookStepRow).where(PlaybookStepRow.status == "failed")
    if ids is not None:
        stmt = stmt.where(PlaybookStepRow.id.in_(ids))
    with sessions() as session, session.begin():
        return len(session.execute(stmt.values(status="due", due_at=now, attempts=0,
                                               done_at=None).returning(PlaybookStepRow.id)).all())


def list_steps(sessions: sessionmaker[Session], status: str | None = None,
               account_id: str | None = None, limit: int = 100) -> list[PlaybookStepRow]:
    """The latest steps (due soonest first among open ones), optionally of a status/account."""
    stmt = select(PlaybookStepRow)
    if status is not None:
        stmt = stmt.where(PlaybookStepRow.status == status)
    if account_id is not None:
        stmt = stmt.where(PlaybookStepRow.account_id == account_id)
    with sessions() as session:
        return list(session.scalars(stmt.order_by(PlaybookStepRow.due_at.desc()).limit(limit)))
