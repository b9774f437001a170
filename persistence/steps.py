"""The playbook-step queue: a step is a row due at an instant; executors lease due rows.

Leases make a crash harmless: a step whose executor died is taken over when its lease runs
out, and runs again with the same idempotency keys for its effects. Two executors never
hold one row at once: PostgreSQL claims with `FOR UPDATE SKIP LOCKED`, SQLite under the
write lock every transaction takes first (see persistence/db.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import String, and_, bindparam, case, exists, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from persistence.bulk import table_of
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


def step_values(*, key: str, playbook: str, account_id: str, signal_id: str, step: str,
                due_at: datetime, tags: list[str], run_name: str,
                now: datetime | None = None) -> dict[str, object]:
    """The row of a new step, as `enqueue_step` stores it."""
    return dict(idempotency_key=key, playbook=playbook, account_id=account_id,
                signal_id=signal_id, step=step, run_name=run_name[:256],
                tags=sorted(set(tags)), due_at=due_at, status="due", attempts=0,
                created_at=now or datetime.now(UTC))


def enqueue_step(session: Session, *, key: str, playbook: str, account_id: str,
                 signal_id: str, step: str, due_at: datetime, tags: list[str],
                 run_name: str, now: datetime | None = None) -> bool:
    """Add a step unless its key exists (caller commits); whether it was added."""
    return insert_if_absent(session, PlaybookStepRow, step_values(
        key=key, playbook=playbook, account_id=account_id, signal_id=signal_id, step=step,
        due_at=due_at, tags=tags, run_name=run_name, now=now), key=("idempotency_key",))


# The hot statements, built once with bind parameters (building one costs more than running
# it); Core on the table, not the ORM class, so no ORM bulk-update bookkeeping either.
_STEPS = table_of(PlaybookStepRow)
_T = _STEPS.c
_CLAIMABLE = or_(and_(_T.status == "due", _T.due_at <= bindparam("now")),
                 and_(_T.status == "running", _T.lease_until < bindparam("now")))
# PostgreSQL locks the rows it picks (SKIP LOCKED: not those another claim holds); the
# UPDATE's RETURNING gives them, so a claim is one statement.
_CLAIM = update(_STEPS).where(_T.id.in_(
    select(_T.id).where(_CLAIMABLE).order_by(_T.due_at).limit(bindparam("n"))
    .with_for_update(skip_locked=True).scalar_subquery())).values(
        status="running", lease_owner=bindparam("owner"), lease_until=bindparam("until"),
        attempts=_T.attempts + 1, started_at=bindparam("now")).returning(
        _T.id, _T.idempotency_key, _T.playbook, _T.account_id, _T.signal_id, _T.step, _T.tags,
        _T.attempts, _T.due_at)
# SET columns come from the parameters; the WHERE's have names of their own
_FINISH = update(_STEPS).where(
    _T.id == bindparam("b_id"), _T.lease_owner == bindparam("b_owner"),
    _T.status == "running").returning(_T.id)
_R = table_of(PlaybookRunRow).c
# one statement: the run is Running while a step of it is open, else it has ended
_STILL_OPEN = exists().where(_T.playbook == bindparam("b_playbook"),
                             _T.signal_id == bindparam("b_signal"), _T.status.in_(OPEN))
_RUN_STATE = update(table_of(PlaybookRunRow)).where(
    _R.playbook == bindparam("b_playbook"), _R.signal_id == bindparam("b_signal"),
    _R.state.not_in(("Coalesced",))).values(
        state=case((_STILL_OPEN, "Running"), else_=bindparam("b_ended", type_=String())),
        updated_at=bindparam("b_now"))


def claim_due(sessions: sessionmaker[Session], owner: str, limit: int, lease_s: float,
              now: datetime | None = None) -> list[ClaimedStep]:
    """Lease up to `limit` steps that are due (or whose lease ran out), earliest first."""
    now = now or datetime.now(UTC)
    with sessions() as session, session.begin():
        rows = session.execute(_CLAIM, dict(
            now=now, n=limit, owner=owner, until=now + timedelta(seconds=lease_s))).all()
    steps = [ClaimedStep(r.id, r.idempotency_key, r.playbook, r.account_id, r.signal_id,
                         r.step, tuple(r.tags or ()), r.attempts, r.due_at) for r in rows]
    return sorted(steps, key=lambda s: (s.due_at, s.id))  # RETURNING keeps no order


def finish_step(sessions: sessionmaker[Session], step: ClaimedStep, owner: str, *,
                status: str, outcome: str | None = None, error: str | None = None,
                retry_at: datetime | None = None, task_run_id: str | None = None,
                run_name: str | None = None, now: datetime | None = None,
                queued: Sequence[Mapping[str, object]] = ()) -> bool:
    """Record how a leased step ended (done, failed, or due again at `retry_at`).

    `queued`: the rows of steps it queued (`step_values`), added unless their key exists in
    the same transaction, first, whether or not the lease is still held (as they would have
    been, one by one, while it ran). Returns False when the lease was lost meanwhile
    (another executor took the step over). The playbook run's row follows: Completed when
    no step of it is left open.
    """
    now = now or datetime.now(UTC)
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
        for row in queued:
            insert_if_absent(session, PlaybookStepRow, row, key=("idempotency_key",))
        changed = session.execute(_FINISH, {**values, "b_id": step.id,
                                            "b_owner": owner}).first()
        if changed is None:
            return False
        session.execute(_RUN_STATE, dict(
            b_playbook=step.playbook, b_signal=step.signal_id, b_now=now,
            b_ended="Failed" if status == "failed" else "Completed"))
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
