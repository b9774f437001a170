"""Durable delivery retries: what an attempt's outcome does to its action row, which messages
of a step wait for another try, and `laer actions retry` re-queueing failed ones.

A message the gate let through is `pending` while it is tried, then `sent`, `retrying` (with
`attempts`, `next_attempt_at` and `last_error`) or `failed`. A `retrying` message is tried
again by a scheduled run of its step (see machine.py), with exponential backoff, until it is
sent or `delivery_attempts` tries have failed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Select, bindparam, func, select
from sqlalchemy.orm import Session, sessionmaker

from flows.kit.actions import note_attempt
from flows.kit.registry import DEPLOYMENT_NAME
from flows.kit.settings import PlaybookSettings
from flows.kit.transport import Outcome
from persistence.tables import ActionRow

MESSAGE_KINDS = ("email", "webhook")


@dataclass(frozen=True)
class RetryTarget:
    """The step run that tries a message again: its playbook, account, signal, step, time."""

    playbook: str
    account_id: str
    signal_id: str
    step: str
    at: datetime

    @property
    def key(self) -> str:
        """The retry run's idempotency key: one run per step and retry instant."""
        return retry_run_key(self.playbook, self.signal_id, self.step, self.at)


def retry_run_key(playbook: str, signal_id: str, step: str, at: datetime) -> str:
    """`<deployment>:<signal>:<step>:retry@<instant>`, the same whoever schedules it."""
    return f"{playbook}/{DEPLOYMENT_NAME}:{signal_id}:{step}:retry@{at:%Y%m%dT%H%M%S%f}"


def apply_outcome(row: ActionRow, outcome: Outcome, settings: PlaybookSettings,
                  now: datetime, sent_at: datetime) -> None:
    """Move `row` after one attempt: sent, retrying after a backoff, or failed."""
    row.attempts = (row.attempts or 0) + 1
    note_attempt(row, outcome.status, outcome.code, outcome.error, now)
    if outcome.status == "sent":
        row.status, row.reason, row.next_attempt_at = "sent", None, None
        row.payload = {**row.payload, "sent_at": sent_at.isoformat(), "channel": row.kind}
        return
    error = (outcome.error or "unknown error")[:512]
    row.last_error = error
    if outcome.status == "transient" and row.attempts < settings.delivery_attempts:
        wait = settings.retry_delay(row.attempts)
        if outcome.retry_after_s is not None:  # the receiver's wish, within the longest wait
            wish = min(outcome.retry_after_s, settings.delivery_backoff_max_s)
            wait = max(wait, timedelta(seconds=wish))
        row.status, row.next_attempt_at = "retrying", now + wait
        row.reason = f"attempt {row.attempts} failed: {error}"[:256]
        return
    row.status, row.next_attempt_at = "failed", None
    row.reason = (error if outcome.status == "permanent"
                  else f"gave up after {row.attempts} attempts: {error}")[:256]


def _step_messages(playbook: str, signal_id: str, step: str) -> Select[tuple[ActionRow]]:
    # Message keys start `<playbook>:<signal>:<step>:`; autoescape keeps `_` literal.
    return select(ActionRow).where(
        ActionRow.idempotency_key.startswith(f"{playbook}:{signal_id}:{step}:", autoescape=True),
        ActionRow.kind.in_(MESSAGE_KINDS), ActionRow.status == "retrying")


def retrying_keys(sessions: sessionmaker[Session], playbook: str, signal_id: str,
                  step: str) -> list[str]:
    """Keys of the step's messages waiting for another try."""
    with sessions() as session:
        return retrying_keys_in(session, playbook, signal_id, step)


# `_step_messages` built once for the read every step makes; the prefix escaped as
# `startswith(..., autoescape=True)` escapes it.
_RETRYING_KEYS = select(ActionRow.idempotency_key).where(
    ActionRow.idempotency_key.like(bindparam("pattern"), escape="/"),
    ActionRow.kind.in_(MESSAGE_KINDS), ActionRow.status == "retrying").order_by(ActionRow.id)


def _like_prefix(prefix: str) -> str:
    escaped = prefix.replace("/", "//").replace("%", "/%").replace("_", "/_")
    return escaped + "%"


def retrying_keys_in(session: Session, playbook: str, signal_id: str, step: str) -> list[str]:
    """`retrying_keys` in an open session (one column read, no rows built)."""
    pattern = _like_prefix(f"{playbook}:{signal_id}:{step}:")
    return list(session.scalars(_RETRYING_KEYS, {"pattern": pattern}))


def next_retry(sessions: sessionmaker[Session], playbook: str, signal_id: str,
               step: str) -> datetime | None:
    """When the step's earliest waiting message is due, if one waits."""
    stmt = _step_messages(playbook, signal_id, step).with_only_columns(
        func.min(ActionRow.next_attempt_at))
    with sessions() as session:
        return session.scalar(stmt)


def target_of(row: ActionRow) -> RetryTarget:
    """The step run that retries `row`."""
    assert row.next_attempt_at is not None, row.idempotency_key
    return RetryTarget(row.playbook, row.account_id, str(row.payload.get("signal_id")),
                       str(row.payload.get("step")), row.next_attempt_at)


def due_targets(sessions: sessionmaker[Session], now: datetime, limit: int = 500
                ) -> list[RetryTarget]:
    """Retry runs that should exist by `now`, one per step and instant."""
    with sessions() as session:
        rows = session.scalars(select(ActionRow).where(
            ActionRow.status == "retrying", ActionRow.kind.in_(MESSAGE_KINDS),
            ActionRow.next_attempt_at <= now).order_by(ActionRow.next_attempt_at).limit(limit))
        return sorted({target_of(r) for r in rows}, key=lambda t: t.at)


def requeue(sessions: sessionmaker[Session], now: datetime, ids: list[int] | None = None
            ) -> list[RetryTarget]:
    """Set failed messages (`ids`, or every failed one) retrying now, with a fresh count."""
    stmt = select(ActionRow).where(ActionRow.status == "failed",
                                   ActionRow.kind.in_(MESSAGE_KINDS)).with_for_update()
    if ids is not None:
        stmt = stmt.where(ActionRow.id.in_(ids))
    with sessions() as session:
        rows = list(session.scalars(stmt))
        for row in rows:
            row.status, row.attempts, row.next_attempt_at = "retrying", 0, now
            row.reason = "re-queued"
        targets = sorted({target_of(r) for r in rows}, key=lambda t: t.at)
        session.commit()
    return targets


def messages(sessions: sessionmaker[Session], status: str | None = None, limit: int = 100
             ) -> list[ActionRow]:
    """The latest messages (email, webhook), optionally only those in `status`."""
    stmt = select(ActionRow).where(ActionRow.kind.in_(MESSAGE_KINDS))
    if status is not None:
        stmt = stmt.where(ActionRow.status == status)
    with sessions() as session:
        return list(session.scalars(stmt.order_by(ActionRow.id.desc()).limit(limit)))
