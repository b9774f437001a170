"""What a backtest leaves in its folder: `actions.jsonl`, `summary.json`, and the diff of two."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select

from persistence.tables import ActionRow, PlaybookRunRow, SignalRow


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def action_record(row: ActionRow) -> dict[str, Any]:
    """One action as a line of actions.jsonl: what, to whom, the gate's decision and why."""
    payload = row.payload or {}
    raw = payload.get("content")
    content: dict[str, Any] = raw if isinstance(raw, dict) else {}
    return {
        "id": row.id, "at": _iso(row.created_at), "account_id": row.account_id,
        "playbook": row.playbook, "step": payload.get("step"), "kind": row.kind,
        "template": payload.get("template"), "recipient": row.recipient, "role": row.role,
        "subject": row.subject, "status": row.status, "reason": row.reason,
        "due_at": _iso(row.due_at), "sent_at": payload.get("sent_at"),
        "message_id": content.get("id"), "signal_id": payload.get("signal_id"),
        "key": row.idempotency_key,
    }


def actions(engine: Engine) -> list[dict[str, Any]]:
    """Every action of the backtest database, in the order they were recorded."""
    with engine.connect() as conn:
        rows = conn.execute(select(ActionRow).order_by(ActionRow.id)).all()
    return [action_record(ActionRow(**r._mapping)) for r in rows]


def write_actions(path: Path, records: list[dict[str, Any]]) -> None:
    """actions.jsonl: one action a line."""
    with path.open("w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record, sort_keys=True) + "\n")


def tallies(engine: Engine, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Signals by kind, runs by playbook, actions by kind/status and held-back reasons."""
    with engine.connect() as conn:
        signals = dict(conn.execute(select(SignalRow.kind, func.count())
                                    .group_by(SignalRow.kind)).tuples().all())
        runs = dict(conn.execute(select(PlaybookRunRow.playbook, func.count())
                                 .group_by(PlaybookRunRow.playbook)).tuples().all())
    by_kind = Counter(f"{r['kind']}:{r['status']}" for r in records)
    reasons = Counter(f"{r['status']}:{(r['reason'] or '').split(':')[0]}" for r in records
                      if r["status"] in ("suppressed", "deferred"))
    per_playbook = Counter(f"{r['playbook']}:{r['kind']}:{r['status']}" for r in records)
    return {"signals": signals, "runs": runs, "actions": dict(sorted(by_kind.items())),
            "held_back": dict(sorted(reasons.items())),
            "by_playbook": dict(sorted(per_playbook.items()))}


def _fingerprint(record: dict[str, Any]) -> tuple[Any, ...]:
    return (record["playbook"], record["step"], record["kind"], record["template"],
            record["recipient"], record["status"], record["reason"])


def diff(left: list[dict[str, Any]], right: list[dict[str, Any]]) -> dict[str, Any]:
    """Accounts whose actions differ between two runs (kind, template, recipient, decision)."""
    def grouped(records: list[dict[str, Any]]) -> dict[str, Counter[tuple[Any, ...]]]:
        out: dict[str, Counter[tuple[Any, ...]]] = {}
        for r in records:
            out.setdefault(r["account_id"], Counter())[_fingerprint(r)] += 1
        return out

    a, b = grouped(left), grouped(right)
    fields = ("playbook", "step", "kind", "template", "recipient", "status", "reason")
    changed: dict[str, Any] = {}
    for account in sorted(set(a) | set(b)):
        mine, theirs = a.get(account, Counter()), b.get(account, Counter())
        if mine == theirs:
            continue
        changed[account] = {
            "only_in_base": [dict(zip(fields, k, strict=True)) for k in
                             sorted((mine - theirs).elements(), key=str)],
            "only_in_compare": [dict(zip(fields, k, strict=True)) for k in
                                sorted((theirs - mine).elements(), key=str)]}
    return {"accounts_differing": len(changed), "accounts": changed}
