"""The side effects of a step: a message through the outreach gate, a task for a person.

Each records its outcome under an idempotency key before and after the
effect, so a retry or a re-run of the step sends nothing twice. A message the gate lets
through is stored with what it says, then tried once; one that failed for a transient
reason waits (`retrying`) for its step's retry run, which sends the stored copy.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from flows.kit import actions, clock, transport
from flows.kit.retries import apply_outcome, retrying_keys
from flows.kit.runtime import current_flow_run_id, runtime
from flows.kit.settings import playbook_settings
from flows.kit.templates import Rendered, render
from flows.kit.transport import Outcome
from laer_domain.model import Account, Contact
from laer_domain.outreach import (
    AccountState,
    Defer,
    MessageIntent,
    Send,
    Suppress,
    decide,
)
from persistence.tables import ActionRow

LINKS_BASE = "https://success.laer.example"


@dataclass(frozen=True)
class Delivery:
    """What became of one action."""

    kind: str
    subject: str
    status: str
    recipient: str | None = None
    reason: str | None = None
    due_at: datetime | None = None
    action_id: int | None = None  # its row: `laer why <id>`


def _short(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def message_context(account: Account, contact: Contact,
                    extra: dict[str, Any]) -> dict[str, Any]:
    """Template variables: plain values copied from the account (never live objects)."""
    health = account.health
    q = quote(account.id, safe="")
    return {
        "contact": {"name": contact.name, "email": contact.email, "role": contact.role},
        "account": {
            "id": account.id, "stage": account.stage.value, "plan": account.term.plan,
            "seats": account.term.seats, "term_end": account.term.end.date().isoformat(),
            "health_score": health.score if health else None,
            "health_band": health.band if health else None,
            "goals": [{"key": g.key, "target": str(g.target), "achieved": g.achieved,
                       "value": None if g.value is None else str(g.value)}
                      for g in account.goals],
        },
        "links": {"training": f"{LINKS_BASE}/training?account={q}",
                  "survey": f"{LINKS_BASE}/survey?account={q}",
                  "guide": f"{LINKS_BASE}/guides?account={q}"},
        **extra,
    }


def message_key(playbook: str, signal_id: str, step: str, message: str, email: str) -> str:
    """The idempotency key of one message to one contact in one step."""
    return f"{playbook}:{signal_id}:{step}:{message}:{_short(email)}"


def message_id(key: str) -> str:
    """The Message-ID / webhook-id of the message under `key`: the same on every try."""
    return "msg_" + hashlib.sha256(key.encode()).hexdigest()[:32]


def delivery_of(row: ActionRow) -> Delivery:
    """The Delivery an action row stands for."""
    reason = row.reason if row.status != "retrying" else row.last_error
    due = row.next_attempt_at if row.status == "retrying" else row.due_at
    return Delivery(row.kind, row.subject, row.status, row.recipient, reason, due, row.id)


def _attempt(row: ActionRow) -> Outcome:
    rt, settings = runtime(), playbook_settings()
    content = row.payload.get("content")
    if not isinstance(content, dict):  # recorded before contents were kept for retries
        return Outcome("permanent", "no stored content to send again")
    if row.kind == "webhook":
        if not settings.webhook_url:
            return Outcome("permanent", "LAER_PLAYBOOK_WEBHOOK_URL is not set")
        return transport.post_webhook(settings.webhook_url, rt.settings.webhook_key(),
                                      str(content["body"]).encode(), str(content["id"]))
    return transport.send_email(rt.settings.smtp, to=str(row.recipient),
                                subject=row.subject, text=str(content["text"]),
                                html=content.get("html"), message_id=str(content["id"]))


def attempt_delivery(key: str, row: ActionRow | None = None) -> Delivery:
    """Try once to deliver the message recorded under `key` and record what became of it.

    `row`: the caller's copy of it, just read or written (saves reading it again)."""
    rt = runtime()
    if row is None:
        row = actions.find_action(rt.reads, key)  # detached: no transaction while sending
    if row is None or row.status not in ("pending", "retrying"):
        return Delivery("email", key, "missing") if row is None else delivery_of(row)
    sim = clock.simulated()
    # A simulated run records the send (with its Message-ID in `content`); nothing leaves.
    outcome = transport.SENT if sim is not None and sim.record_only else _attempt(row)
    with rt.sessions() as session:
        current = session.get(ActionRow, row.id, with_for_update=True)
        assert current is not None, key
        _record_outcome(current, outcome)
        session.commit()
        return delivery_of(current)


def _record_outcome(row: ActionRow, outcome: Outcome) -> None:
    settings = playbook_settings()
    apply_outcome(row, outcome, settings, clock.now(), settings.now())
    if clock.simulated() is not None:  # the simulator's record of a send that never left
        row.payload = {**row.payload, "transport": "recorded"}


def _record_only(row: ActionRow) -> None:
    # Nothing leaves a record-only simulation: its send is recorded with the pending row.
    _record_outcome(row, transport.SENT)


def retry_deliveries(playbook: str, signal_id: str, step: str,
                     keys: list[str] | None = None) -> list[Delivery]:
    """Try again every message of this step that waits for another attempt (`keys`, if the
    caller read them already)."""
    if keys is None:
        keys = retrying_keys(runtime().reads, playbook, signal_id, step)
    return [attempt_delivery(key) for key in keys]


def _content(channel: str, key: str, body: dict[str, Any], rendered: Rendered
             ) -> dict[str, Any]:
    # Kept with the action, so a retry sends exactly what the gate let through.
    if channel == "webhook":
        return {"id": message_id(key),
                "body": json.dumps(body, sort_keys=True, separators=(",", ":"))}
    return {"id": message_id(key), "text": rendered.text, "html": rendered.html}


# Statuses a message keeps whatever the gate would say now (no history needed to answer).
_SETTLED = ("sent", "suppressed", "retrying", "failed", "pending")


def deliver_message(playbook: str, priority: int, signal_id: str, step: str, message: str,
                    account: Account, contact: Contact, promotional: bool,
                    extra: dict[str, Any]) -> Delivery:
    """Pass one message through the outreach gate, then send, defer or suppress it."""
    rt, settings = runtime(), playbook_settings()
    key = message_key(playbook, signal_id, step, message, contact.email)
    done, sent = actions.find_with_history(rt.reads, key, contact.email, _SETTLED)
    if done is not None and done.status in ("sent", "suppressed", "retrying", "failed"):
        return delivery_of(done)  # retrying: the step's retry run tries it, not this one
    if done is not None and done.status == "pending":
        return attempt_delivery(key, done)  # outcome unknown (a crash): the same id goes again
    now, policy = settings.now(), settings.outreach_policy()
    intent = MessageIntent(playbook=playbook, name=message, priority=priority,
                           channels=("email", "webhook"), promotional=promotional)
    decision = decide(intent, contact, AccountState.of(account),
                      sent, now, policy)
    rendered = render(message, message_context(account, contact, extra))
    channel = decision.channel if isinstance(decision, Send) else "email"
    fields: dict[str, Any] = dict(
        account_id=account.id, playbook=playbook, kind=channel, subject=rendered.subject,
        recipient=contact.email, flow_run_id=current_flow_run_id())
    info = {"template": message, "step": step, "priority": priority, "signal_id": signal_id,
            "gate": actions.gate_record(decision, now, policy)}
    if isinstance(decision, Suppress):
        row = actions.upsert_action(rt.sessions, key=key, status="suppressed",
                                    reason=decision.reason, payload=info, **fields)
        return Delivery(channel, rendered.subject, "suppressed", contact.email, decision.reason,
                        action_id=row.id)
    if isinstance(decision, Defer):
        row = actions.upsert_action(rt.sessions, key=key, status="deferred",
                                    reason=decision.reason, due_at=decision.until,
                                    payload=info, **fields)
        return Delivery(channel, rendered.subject, "deferred", contact.email, decision.reason,
                        decision.until, row.id)
    body = {"type": "laer.message", "account_id": account.id, "playbook": playbook,
            "step": step, "message": message, "to": contact.email,
            "subject": rendered.subject, "text": rendered.text}
    if channel == "webhook":
        rt.settings.webhook_key()  # refuse the default secret before recording anything
    sim = clock.simulated()
    content = _content(channel, key, body, rendered)
    if sim is not None and sim.record_only:
        row = actions.upsert_action(rt.sessions, key=key, status="pending",
                                    payload={**info, "content": content}, then=_record_only,
                                    **fields)
        return delivery_of(row)
    row = actions.upsert_action(rt.sessions, key=key, status="pending",
                                payload={**info, "content": content}, **fields)
    return attempt_delivery(key, row)


def assign_task(playbook: str, signal_id: str, step: str, name: str, key: str,
                account_id: str, subject: str, role: str, due_in_days: float,
                details: dict[str, Any]) -> Delivery:
    """Create a task row for a person (role, owner, due date, status open), once."""
    settings = playbook_settings()
    due = settings.now() + settings.days(due_in_days)
    row, _ = actions.record_action(
        runtime().sessions, key=key, account_id=account_id,
        playbook=playbook, kind="task", role=role, recipient=role, subject=subject[:256],
        status="open", flow_run_id=current_flow_run_id(), due_at=due,
        payload={"owner": role, "step": step, "signal_id": signal_id, **details})
    return Delivery("task", row.subject, row.status, row.recipient, None, row.due_at, row.id)
