"""`laer why`: the stored chain behind an action, a signal or a playbook run, read by id.

Every link is a stored id, never a log line: a signal's `evidence.event_ids` name the
events of the account's timeline (`applied_events`) that raised it, and a time rule's signal
(no such events) names in `evidence.raised_by` what moved the clock past its instant: the
event applied (its id) or the sweep (its instant); a playbook run and its steps are keyed by
(playbook, signal id), and a Coalesced run joined the run of its account and playbook open
when it was dispatched: the latest one before it (by id) that is not itself coalesced (the
dispatcher keeps one open run per account and playbook); an action's payload names its
signal and step,
and its `trail` names the step execution (step row key, attempt, Prefect task run id) and
the gate's decision each time its status was set, including the ids of the earlier
actions that used up a frequency cap; `deliveries` holds each attempt at sending it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from laer_domain.wire import iso
from persistence.tables import (
    ActionRow,
    AppliedEventRow,
    PlaybookRunRow,
    PlaybookStepRow,
    SignalRow,
)

MESSAGE_KINDS = ("email", "webhook")
COALESCED = "Coalesced"  # the state of a run row for a signal that joined an open run


def _iso(value: datetime | None) -> str | None:
    return None if value is None else iso(value)


def _events(session: Session, account_id: str, event_ids: list[str]) -> list[dict[str, Any]]:
    # One row per id, first recorded; an id not in the timeline is shown as not stored.
    found: dict[str, AppliedEventRow] = {}
    if event_ids:
        for row in session.scalars(select(AppliedEventRow).where(
                AppliedEventRow.account_id == account_id,
                AppliedEventRow.event_id.in_(event_ids)).order_by(AppliedEventRow.id)):
            found.setdefault(row.event_id, row)
    out = []
    for event_id in event_ids:
        got = found.get(event_id)
        out.append({"id": event_id, "stored": got is not None,
                    "type": got.type if got else None, "source": got.source if got else None,
                    "time": _iso(got.time) if got else None})
    return out


def _clock(session: Session, account_id: str, raised: Any) -> dict[str, Any] | None:
    # What moved the account's clock past a time rule's instant; None for a signal stored
    # before evidence said (or one an event raised).
    if not isinstance(raised, dict) or raised.get("by") not in ("event", "sweep"):
        return None
    event_id = raised.get("event_id")
    event = _events(session, account_id, [str(event_id)])[0] if event_id else None
    return {"by": raised["by"], "at": raised.get("at"), "event": event}


def signal_link(session: Session, signal_id: str) -> dict[str, Any] | None:
    """The signal with its rule, observed values and the events (or the clock) that raised
    it."""
    row = session.get(SignalRow, signal_id)
    if row is None:
        return None
    evidence = row.evidence or {}
    event_ids = [str(e) for e in evidence.get("event_ids") or []]
    return {"id": row.id, "kind": row.kind, "account_id": row.account_id, "at": _iso(row.at),
            "stage": row.stage, "rule": evidence.get("rule"),
            "details": evidence.get("details") or {},
            # a time rule (renewal window, stalled adoption) is raised by the clock, not events
            "raised_by": "events" if event_ids else "time",
            "clock": _clock(session, row.account_id, evidence.get("raised_by")),
            "retracted_at": _iso(row.retracted_at),
            "events": _events(session, row.account_id, event_ids)}


def _run(row: PlaybookRunRow) -> dict[str, Any]:
    return {"id": row.id, "playbook": row.playbook, "signal_id": row.signal_id,
            "state": row.state, "name": row.flow_run_name, "flow_run_id": row.flow_run_id,
            "created_at": _iso(row.created_at), "updated_at": _iso(row.updated_at)}


def _step(row: PlaybookStepRow) -> dict[str, Any]:
    return {"id": row.id, "key": row.idempotency_key, "step": row.step,
            "run_name": row.run_name, "status": row.status, "attempts": row.attempts,
            "task_run_id": row.task_run_id, "due_at": _iso(row.due_at),
            "started_at": _iso(row.started_at), "done_at": _iso(row.done_at),
            "outcome": row.outcome, "last_error": row.last_error}


def _runs(session: Session, playbook: str | None, signal_id: str) -> list[PlaybookRunRow]:
    stmt = select(PlaybookRunRow).where(PlaybookRunRow.signal_id == signal_id)
    if playbook is not None:
        stmt = stmt.where(PlaybookRunRow.playbook == playbook)
    return list(session.scalars(stmt.order_by(PlaybookRunRow.id)))


def _steps(session: Session, playbook: str, signal_id: str) -> list[PlaybookStepRow]:
    return list(session.scalars(select(PlaybookStepRow).where(
        PlaybookStepRow.playbook == playbook, PlaybookStepRow.signal_id == signal_id)
        .order_by(PlaybookStepRow.id)))


def _used_by(session: Session, ids: list[int]) -> list[dict[str, Any]]:
    rows = {r.id: r for r in session.scalars(select(ActionRow).where(ActionRow.id.in_(ids)))}
    out = []
    for action_id in ids:
        r = rows.get(action_id)
        out.append({"action_id": action_id, "stored": r is not None} if r is None else {
            "action_id": r.id, "stored": True, "playbook": r.playbook, "subject": r.subject,
            "status": r.status, "sent_at": r.payload.get("sent_at") or _iso(r.created_at),
            "priority": r.payload.get("priority"), "why": f"laer why {r.id}"})
    return out


def _decision(session: Session, entry: dict[str, Any]) -> dict[str, Any]:
    out = dict(entry)
    gate = entry.get("gate")
    if isinstance(gate, dict) and gate.get("used_by"):
        out["gate"] = {**gate, "used_by": _used_by(session, [int(i) for i in gate["used_by"]])}
    return out


def _delivery(row: ActionRow) -> dict[str, Any] | None:
    if row.kind not in MESSAGE_KINDS:
        return None
    content = row.payload.get("content")
    raw = content.get("id") if isinstance(content, dict) else None
    message_id = None if raw is None else (f"<{raw}@laer>" if row.kind == "email" else raw)
    tries = list(row.payload.get("deliveries") or [])
    codes = [t.get("code") for t in tries if t.get("code") is not None]
    return {"channel": row.kind, "status": row.status, "message_id": message_id,
            "sent_at": row.payload.get("sent_at"), "attempts": row.attempts,
            "last_code": codes[-1] if codes else None, "last_error": row.last_error,
            "next_attempt_at": _iso(row.next_attempt_at), "tries": tries}


def action_link(session: Session, row: ActionRow) -> dict[str, Any]:
    """One action: what it is, every decision on it (with its step execution) and delivery."""
    payload = row.payload or {}
    return {"id": row.id, "key": row.idempotency_key, "kind": row.kind,
            "playbook": row.playbook, "account_id": row.account_id,
            "template": payload.get("template"), "step": payload.get("step"),
            "signal_id": payload.get("signal_id"), "recipient": row.recipient,
            "role": row.role, "subject": row.subject, "status": row.status,
            "reason": row.reason, "due_at": _iso(row.due_at),
            "created_at": _iso(row.created_at), "flow_run_id": row.flow_run_id,
            "gate": payload.get("gate"),
            "decisions": [_decision(session, e) for e in payload.get("trail") or []],
            "delivery": _delivery(row)}


def _steps_of(session: Session, action: dict[str, Any], steps: list[PlaybookStepRow]
              ) -> list[dict[str, Any]]:
    # The step executions named by the action's trail, each with its attempt and task run;
    # an action recorded before trails were kept falls back to the steps of its name.
    by_key = {s.idempotency_key: s for s in steps}
    seen: dict[tuple[str, int], dict[str, Any]] = {}
    for entry in action["decisions"]:
        key = entry.get("step_key")
        if key is None:
            continue
        row = by_key.get(key)
        seen.setdefault((key, int(entry.get("attempt") or 0)), {
            **(_step(row) if row else {"key": key, "step": action["step"]}),
            "attempt": entry.get("attempt"), "task_run_id": entry.get("task_run_id")})
    if seen:
        return list(seen.values())
    return [_step(s) for s in steps if s.step == action["step"] or
            (s.step == "start" and s.run_name.endswith(f"/{action['step']}"))]


def action_chain(session: Session, action_id: int) -> dict[str, Any] | None:
    """Events -> signal -> playbook run -> step execution -> gate decision -> delivery."""
    row = session.get(ActionRow, action_id)
    if row is None:
        return None
    action = action_link(session, row)
    signal_id = action["signal_id"]
    signal = signal_link(session, str(signal_id)) if signal_id else None
    runs = _runs(session, row.playbook, str(signal_id)) if signal_id else []
    steps = _steps(session, row.playbook, str(signal_id)) if signal_id else []
    return {"action": action, "signal": signal,
            "run": _run(runs[0]) if runs else None,
            "steps": _steps_of(session, action, steps)}


def _pair_runs(session: Session, run: PlaybookRunRow) -> list[PlaybookRunRow]:
    return list(session.scalars(select(PlaybookRunRow).where(
        PlaybookRunRow.account_id == run.account_id, PlaybookRunRow.playbook == run.playbook)
        .order_by(PlaybookRunRow.id)))


def _coalescing(session: Session, run: PlaybookRunRow
                ) -> tuple[PlaybookRunRow | None, list[PlaybookRunRow]]:
    """The run a Coalesced run joined, and the Coalesced runs that joined this one."""
    before: PlaybookRunRow | None = None
    joined: list[PlaybookRunRow] = []
    owner: PlaybookRunRow | None = None  # the open run a Coalesced row joins, in id order
    for other in _pair_runs(session, run):
        if other.id == run.id:
            before = owner
        if other.state != COALESCED:
            owner = other
        elif owner is not None and owner.id == run.id:
            joined.append(other)
    return (before if run.state == COALESCED else None), joined


def _run_detail(session: Session, run: PlaybookRunRow) -> dict[str, Any]:
    rows = session.scalars(select(ActionRow).where(
        ActionRow.account_id == run.account_id, ActionRow.playbook == run.playbook)
        .order_by(ActionRow.id))
    actions = [action_link(session, a) for a in rows
               if (a.payload or {}).get("signal_id") == run.signal_id]
    into, joined = _coalescing(session, run)
    return {**_run(run), "steps": [_step(s) for s in _steps(session, run.playbook,
                                                             run.signal_id)],
            "actions": actions,
            "coalesced_into": None if into is None else {**_run(into),
                                                         "why": f"laer why --run {into.id}"},
            "coalesced": [{**_run(r), "why": f"laer why --run {r.id}"} for r in joined]}


def signal_chain(session: Session, signal_id: str) -> dict[str, Any] | None:
    """The signal, its events, and every playbook run it started with steps and actions."""
    signal = signal_link(session, signal_id)
    if signal is None:
        return None
    return {"signal": signal,
            "runs": [_run_detail(session, r) for r in _runs(session, None, signal_id)]}


def run_chain(session: Session, run_id: int) -> dict[str, Any] | None:
    """A playbook run: the signal and events behind it, its steps and their actions."""
    run = session.get(PlaybookRunRow, run_id)
    if run is None:
        return None
    return {"signal": signal_link(session, run.signal_id), "run": _run_detail(session, run)}
