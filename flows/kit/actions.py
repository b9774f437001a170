"""Real effects of playbooks, each recorded once under an idempotency key."""

from __future__ import annotations

import hashlib
import hmac
import json
import smtplib
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from flows.kit.settings import SmtpSettings
from persistence.tables import ActionRow
from persistence.upsert import insert_if_absent


def _now() -> datetime:
    return datetime.now(UTC)


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
    """The latest messages sent to a recipient, from every playbook and account."""
    with factory() as session:
        return list(session.scalars(
            select(ActionRow).where(ActionRow.recipient == recipient,
                                    ActionRow.status == "sent",
                                    ActionRow.kind.in_(("email", "webhook")))
            .order_by(ActionRow.id.desc()).limit(limit)))


def send_email(smtp: SmtpSettings, *, to: str, subject: str, text: str, html: str | None,
               message_id: str) -> None:
    """Send one message over SMTP; the Message-ID lets receivers drop a repeat."""
    msg = EmailMessage()
    msg["From"] = smtp.sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{message_id}@laer>"
    msg.set_content(text)
    if html:
        msg.add_alternative(html, subtype="html")
    with smtplib.SMTP(smtp.host, smtp.port, timeout=30) as client:
        if smtp.username and smtp.password:
            client.login(smtp.username, smtp.password.get_secret_value())
        client.send_message(msg)


def sign(secret: bytes, body: bytes) -> str:
    """HMAC-SHA256 signature of a webhook body, as sent in X-LAER-Signature."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def post_webhook(url: str, secret: bytes, payload: dict[str, Any], delivery_id: str) -> int:
    """POST a signed JSON body; returns the HTTP status (raises on 5xx and network errors)."""
    body = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    response = httpx.post(url, content=body, timeout=15, headers={
        "Content-Type": "application/json",
        "X-LAER-Signature": sign(secret, body),
        "X-LAER-Delivery": delivery_id,
    })
    if response.status_code >= 500:
        response.raise_for_status()
    return response.status_code
