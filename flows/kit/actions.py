"""Action rows of playbooks (messages and tasks), each recorded once under an idempotency key.

The effects themselves (SMTP, webhooks) are in transport.py; their retries in retries.py.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from flows.kit import clock
from persistence.tables import ActionRow
from persistence.upsert import insert_if_absent


def _now() -> datetime:
    return clock.now()


def find_action(factory: sessionmaker[Session], key: str) -> ActionRow | None:
    """The action recorded under `key`, if any."""
    with factory() as session:
        return session.scalar(select(ActionRow).where(ActionRow.idempotency_key == key))


def _record(session: Session, key: str, fields: dict[str, Any]) -> tuple[ActionRow, bool]:
    created = insert_if_absent(session, ActionRow,
                               {"idempotency_key": key, "created_at": _now(), **fields},
                               key=("idempotency_key",))
    row = session.scalar(select(ActionRow).where(ActionRow.idempotency_key == key))
    assert row is not None, key
    return row, created


def _move(row: ActionRow, status: str, reason: str | None, due_at: datetime | None,
          payload: dict[str, Any] | None) -> None:
    row.status = status
    row.reason = reason
    row.due_at = due_at
    if payload is not None:
        row.payload = {**row.payload, **payload}


def record_action(factory: sessionmaker[Session], *, key: str, account_id: str, playbook: str,
                  kind: str, subject: str, status: str, flow_run_id: str | None = None,
                  recipient: str | None = None, role: str | None = None,
                  reason: str | None = None, due_at: datetime | None = None,
                  payload: dict[str, Any] | None = None) -> tuple[ActionRow, bool]:
    """Insert an action unless `key` exists; returns (row, created)."""
    with factory() as session:
        row, created = _record(session, key, dict(
            account_id=account_id, playbook=playbook, kind=kind, subject=subject,
            status=status, flow_run_id=flow_run_id, recipient=recipient, role=role,
            reason=reason, due_at=due_at, payload=payload or {}))
        session.commit()
        return row, created


def update_action(factory: sessionmaker[Session], key: str, status: str,
                  reason: str | None = None, due_at: datetime | None = None,
                  payload: dict[str, Any] | None = None) -> None:
    """Move a recorded action to `status` (sent, failed, ...)."""
    with factory() as session:
        row = session.scalar(select(ActionRow).where(ActionRow.idempotency_key == key))
        if row is not None:
            _move(row, status, reason, due_at, payload)
            session.commit()


def upsert_action(factory: sessionmaker[Session], *, key: str, status: str,
                  reason: str | None = None, due_at: datetime | None = None,
                  payload: dict[str, Any] | None = None, **fields: Any) -> ActionRow:
    """Record the action under `key`, or move the existing one to `status`."""
    with factory() as session:
        row, created = _record(session, key, dict(status=status, reason=reason, due_at=due_at,
                                                  payload=payload or {}, **fields))
        if not created:
            _move(row, status, reason, due_at, payload)
        session.commit()
        return row


def sent_to(factory: sessionmaker[Session], recipient: str, limit: int = 200
            ) -> list[ActionRow]:
    """The latest messages sent, or on their way, to a recipient, from every playbook."""
    # A message still being tried will arrive too: it counts against the frequency cap.
    with factory() as session:
        return list(session.scalars(
            select(ActionRow).where(ActionRow.recipient == recipient,
                                    ActionRow.status.in_(("sent", "pending", "retrying")),
                                    ActionRow.kind.in_(("email", "webhook")))
            .order_by(ActionRow.id.desc()).limit(limit)))
