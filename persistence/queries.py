"""Read side: what `laer accounts`, `laer account ID` and `laer tasks` show."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from laer_domain.wire import iso
from persistence.tables import (
    AccountRow,
    ActionRow,
    AppliedEventRow,
    HealthChangeRow,
    OutboxRow,
    PlaybookRunRow,
    PlaybookStepRow,
    SignalRow,
    StageChangeRow,
)


def _iso(value: datetime | None) -> str | None:  # an unset instant stays null
    return None if value is None else iso(value)


def list_accounts(session: Session, stage: str | None = None) -> list[dict[str, Any]]:
    """id, stage, stage_since, health and owner of every account (optionally one stage)."""
    query = select(AccountRow).order_by(AccountRow.id)
    if stage:
        query = query.where(AccountRow.stage == stage)
    return [
        {"id": r.id, "stage": r.stage, "stage_since": _iso(r.stage_since),
         "health": {"score": r.health_score, "band": r.health_band}, "owner": r.owner}
        for r in session.scalars(query)
    ]


def account_detail(session: Session, account_id: str) -> dict[str, Any] | None:
    """Everything known about one account, oldest first within each list."""
    row = session.get(AccountRow, account_id)
    if row is None:
        return None
    state = row.state
    history = session.scalars(select(StageChangeRow).where(
        StageChangeRow.account_id == account_id).order_by(StageChangeRow.id))
    health = session.scalars(select(HealthChangeRow).where(
        HealthChangeRow.account_id == account_id).order_by(HealthChangeRow.id))
    signals = session.scalars(select(SignalRow).where(
        SignalRow.account_id == account_id).order_by(SignalRow.seq, SignalRow.at))
    runs = session.scalars(select(PlaybookRunRow).where(
        PlaybookRunRow.account_id == account_id).order_by(PlaybookRunRow.id))
    actions = session.scalars(select(ActionRow).where(
        ActionRow.account_id == account_id).order_by(ActionRow.id))
    steps = session.scalars(select(PlaybookStepRow).where(
        PlaybookStepRow.account_id == account_id).order_by(PlaybookStepRow.due_at))
    outbox = {o.signal_id: o for o in session.scalars(select(OutboxRow).where(
        OutboxRow.account_id == account_id))}
    events = session.scalars(select(AppliedEventRow).where(
        AppliedEventRow.account_id == account_id).order_by(AppliedEventRow.id))
    return {
        "id": row.id,
        "stage": row.stage,
        "stage_since": _iso(row.stage_since),
        "owner": row.owner,
        "health": {"score": row.health_score, "band": row.health_band,
                   "components": (state.get("health") or {}).get("components"),
                   "history": [{"at": _iso(h.at), "score": h.score, "band": h.band,
                                "components": h.components} for h in health]},
        "term": state.get("term"),
        "goals": state.get("goals"),
        "contacts": state.get("contacts"),
        "churn_risk": state.get("churn_risk"),
        "history": [{"from": h.from_stage, "to": h.to_stage, "at": _iso(h.at),
                     "reason": h.reason, "event_id": h.event_id} for h in history],
        "signals": [{"id": s.id, "kind": s.kind, "at": _iso(s.at), "stage": s.stage,
                     "evidence": s.evidence, "retracted_at": _iso(s.retracted_at),
                     **_dispatch(outbox.get(s.id))} for s in signals],
        "playbook_runs": [{"id": r.id, "playbook": r.playbook, "flow_run_id": r.flow_run_id,
                           "name": r.flow_run_name, "state": r.state, "signal_id": r.signal_id,
                           "created_at": _iso(r.created_at)} for r in runs],
        "actions": [{"id": a.id, "why": f"laer why {a.id}", "signal_id": a.payload.get("signal_id"),
                     "kind": a.kind, "playbook": a.playbook, "subject": a.subject,
                     "recipient": a.recipient, "role": a.role, "status": a.status,
                     "reason": a.reason, "due_at": _iso(a.due_at),
                     "created_at": _iso(a.created_at)} for a in actions],
        "steps": [{"name": t.run_name, "status": t.status, "due_at": _iso(t.due_at),
                   "attempts": t.attempts, "done_at": _iso(t.done_at), "outcome": t.outcome,
                   "last_error": t.last_error, "task_run_id": t.task_run_id} for t in steps],
        "events": [{"id": e.event_id, "source": e.source, "type": e.type, "time": _iso(e.time)}
                   for e in events],
    }


def _dispatch(row: OutboxRow | None) -> dict[str, Any]:
    # pending, done, retracted, or dispatch_failed with the error that kept it from a playbook
    if row is None:
        return {"dispatch": None}
    return {"dispatch": row.status, "dispatch_attempts": row.attempts,
            "dispatch_error": row.last_error}


def list_tasks(session: Session, status: str | None = None,
               role: str | None = None) -> list[dict[str, Any]]:
    """Tasks that playbooks assigned to people, soonest due first (optionally one status/role)."""
    query = select(ActionRow).where(ActionRow.kind == "task").order_by(ActionRow.due_at)
    if status:
        query = query.where(ActionRow.status == status)
    if role:
        query = query.where(ActionRow.role == role)
    return [{"account": a.account_id, "playbook": a.playbook, "role": a.role,
             "title": a.subject, "due_at": _iso(a.due_at), "status": a.status}
            for a in session.scalars(query)]
