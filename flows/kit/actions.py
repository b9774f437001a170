"""Action rows of playbooks (messages and tasks), each recorded once under an idempotency key.

The effects themselves (SMTP, webhooks) are in transport.py; their retries in retries.py.
Each row keeps its provenance in `payload` (read back by persistence/provenance.py):
`signal_id` and `step` name it, `trail` lists every status it was given with the step
execution that gave it (step row key, attempt, Prefect task run id) and the gate's decision,
and `deliveries` every attempt at sending it (outcome, HTTP status or SMTP code, error).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session, sessionmaker

from flows.kit import clock
from flows.kit.current import current_step
from laer_domain.outreach import Decision, Defer, OutreachPolicy, Send, SentMessage, Suppress
from persistence.tables import ActionRow
from persistence.upsert import insert_new_row

TRAIL_MAX = 20  # entries kept per action: a message deferred night after night stays bounded
SENT_KINDS = ("email", "webhook")
SENT_STATUSES = ("sent", "pending", "retrying")  # a message still tried will arrive too

# Statements a step runs for each message, built once (building costs more than running).
_BY_KEY = select(ActionRow).where(ActionRow.idempotency_key == bindparam("key"))
# Only the columns the gate reads: no ORM rows, no stored message contents parsed.
_SENT_TO = select(ActionRow.id, ActionRow.playbook, ActionRow.created_at,
                  ActionRow.payload["sent_at"].as_string(),
                  ActionRow.payload["priority"].as_integer()).where(
    ActionRow.recipient == bindparam("recipient"), ActionRow.status.in_(SENT_STATUSES),
    ActionRow.kind.in_(SENT_KINDS)).order_by(ActionRow.id.desc()).limit(200)


def _now() -> datetime:
    return clock.now()


def find_action(factory: sessionmaker[Session], key: str) -> ActionRow | None:
    """The action recorded under `key`, if any."""
    with factory() as session:
        return session.scalar(_BY_KEY, {"key": key})


def step_run() -> dict[str, Any]:
    """The step execution at work: its step row key, attempt and Prefect task run id."""
    here = current_step()
    if here is None:  # a flow run by hand, outside an executor
        return {}
    return {"step_key": here.key, "attempt": here.attempt, "task_run_id": here.task_run_id}


def gate_record(decision: Decision, now: datetime, policy: OutreachPolicy) -> dict[str, Any]:
    """The outreach gate's decision at `now` as stored: the cap it applied and what used it."""
    out: dict[str, Any] = {"decision": type(decision).__name__.lower(), "at": now.isoformat(),
                           "frequency_cap": policy.frequency_cap,
                           "window_days": policy.frequency_window.total_seconds() / 86400}
    if isinstance(decision, Send):
        out["channel"] = decision.channel
    elif isinstance(decision, Suppress):
        out.update(reason=decision.reason, used_by=list(decision.used_by))
    elif isinstance(decision, Defer):
        out.update(reason=decision.reason, until=decision.until.isoformat())
    return out


def _trail(payload: dict[str, Any], status: str, reason: str | None,
           gate: dict[str, Any] | None) -> list[dict[str, Any]]:
    entry: dict[str, Any] = {"status": status, "at": _now().isoformat(), "reason": reason,
                             **step_run()}
    if gate is not None:
        entry["gate"] = gate
    return [*(payload.get("trail") or []), entry][-TRAIL_MAX:]


def note_attempt(row: ActionRow, outcome: str, code: int | None, error: str | None,
                 now: datetime) -> None:
    """Add one delivery attempt (its outcome, HTTP/SMTP code, error) to the row's payload."""
    entry = {"attempt": (row.attempts or 0), "at": now.isoformat(), "outcome": outcome,
             "code": code, "error": error, **step_run()}
    row.payload = {**row.payload,
                   "deliveries": [*(row.payload.get("deliveries") or []), entry][-TRAIL_MAX:]}


def _record(session: Session, key: str, fields: dict[str, Any]) -> tuple[ActionRow, bool]:
    payload = dict(fields.get("payload") or {})
    payload["trail"] = _trail(payload, fields["status"], fields.get("reason"),
                              payload.get("gate"))
    new = insert_new_row(session, ActionRow,
                         {"idempotency_key": key, "created_at": _now(), **fields,
                          "payload": payload},
                         key=("idempotency_key",))
    if new is not None:
        return new, True
    row = session.scalar(_BY_KEY, {"key": key})
    assert row is not None, key
    return row, False


def _move(row: ActionRow, status: str, reason: str | None, due_at: datetime | None,
          payload: dict[str, Any] | None) -> None:
    gate = (payload or {}).get("gate")
    trail = _trail(row.payload, status, reason, gate)
    row.status = status
    row.reason = reason
    row.due_at = due_at
    row.payload = {**row.payload, **(payload or {}), "trail": trail}


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
        row = session.scalar(_BY_KEY, {"key": key})
        if row is not None:
            _move(row, status, reason, due_at, payload)
            session.commit()


def upsert_action(factory: sessionmaker[Session], *, key: str, status: str,
                  reason: str | None = None, due_at: datetime | None = None,
                  payload: dict[str, Any] | None = None,
                  then: Callable[[ActionRow], None] | None = None, **fields: Any) -> ActionRow:
    """Record the action under `key`, or move the existing one to `status`; `then` changes
    the row further in the same transaction."""
    with factory() as session:
        row, created = _record(session, key, dict(status=status, reason=reason, due_at=due_at,
                                                  payload=payload or {}, **fields))
        if not created:
            _move(row, status, reason, due_at, payload)
        if then is not None:
            then(row)
        session.commit()
        return row


def sent_to(factory: sessionmaker[Session], recipient: str, limit: int = 200
            ) -> list[ActionRow]:
    """The latest messages sent, or on their way, to a recipient, from every playbook."""
    # A message still being tried will arrive too: it counts against the frequency cap.
    with factory() as session:
        return list(session.scalars(
            select(ActionRow).where(ActionRow.recipient == recipient,
                                    ActionRow.status.in_(SENT_STATUSES),
                                    ActionRow.kind.in_(SENT_KINDS))
            .order_by(ActionRow.id.desc()).limit(limit)))


def find_with_history(factory: sessionmaker[Session], key: str, recipient: str,
                      settled: tuple[str, ...]) -> tuple[ActionRow | None, list[SentMessage]]:
    """The action under `key` and, unless its status is in `settled`, what `recipient` was
    sent (as `sent_to`, read for the gate): the gate's two reads in one session."""
    with factory() as session:
        row = session.scalar(_BY_KEY, {"key": key})
        if row is not None and row.status in settled:
            return row, []
        sent = [SentMessage(at=datetime.fromisoformat(at) if at else created,
                            priority=priority or 0, playbook=playbook, id=id_)
                for id_, playbook, created, at, priority
                in session.execute(_SENT_TO, {"recipient": recipient})]
        return row, sent
