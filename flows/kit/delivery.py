"""The side effects of a step: a message through the outreach gate, a task for a person.

Each is a Prefect task that records its outcome under an idempotency key before and after the
effect, so a retry or a re-run of the step sends nothing twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from prefect import task
from prefect.cache_policies import NO_CACHE

from flows.kit import actions
from flows.kit.runtime import current_flow_run_id, runtime
from flows.kit.settings import playbook_settings
from flows.kit.templates import render
from laer_domain.model import Account, Contact
from laer_domain.outreach import (
    AccountState,
    Defer,
    MessageIntent,
    Send,
    SentMessage,
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


def _history(rows: Sequence[ActionRow]) -> list[SentMessage]:
    out = []
    for row in rows:
        raw = row.payload.get("sent_at")
        at = datetime.fromisoformat(raw) if raw else row.created_at
        out.append(SentMessage(at=at, priority=int(row.payload.get("priority", 0)),
                               playbook=row.playbook))
    return out


@task(retries=3, retry_delay_seconds=[2, 10, 30], cache_policy=NO_CACHE,
      task_run_name="message-{message}")
def deliver_message(playbook: str, priority: int, signal_id: str, step: str, message: str,
                    account: Account, contact: Contact, promotional: bool,
                    extra: dict[str, Any]) -> Delivery:
    """Pass one message through the outreach gate, then send, defer or suppress it."""
    rt, settings = runtime(), playbook_settings()
    key = f"{playbook}:{signal_id}:{step}:{message}:{_short(contact.email)}"
    done = actions.find_action(rt.sessions, key)
    if done is not None and done.status in ("sent", "suppressed"):
        return Delivery(done.kind, done.subject, done.status, done.recipient, done.reason)
    now = settings.now()
    intent = MessageIntent(playbook=playbook, name=message, priority=priority,
                           channels=("email", "webhook"), promotional=promotional)
    decision = decide(intent, contact, AccountState.of(account),
                      _history(actions.sent_to(rt.sessions, contact.email)), now,
                      settings.outreach_policy())
    rendered = render(message, message_context(account, contact, extra))
    channel = decision.channel if isinstance(decision, Send) else "email"
    fields: dict[str, Any] = dict(
        account_id=account.id, playbook=playbook, kind=channel, subject=rendered.subject,
        recipient=contact.email, flow_run_id=current_flow_run_id())
    info = {"template": message, "step": step, "priority": priority, "signal_id": signal_id}
    if isinstance(decision, Suppress):
        actions.upsert_action(rt.sessions, key=key, status="suppressed", reason=decision.reason,
                              payload=info, **fields)
        return Delivery(channel, rendered.subject, "suppressed", contact.email, decision.reason)
    if isinstance(decision, Defer):
        actions.upsert_action(rt.sessions, key=key, status="deferred", reason=decision.reason,
                              due_at=decision.until, payload=info, **fields)
        return Delivery(channel, rendered.subject, "deferred", contact.email, decision.reason,
                        decision.until)
    actions.upsert_action(rt.sessions, key=key, status="pending", payload=info, **fields)
    try:
        if channel == "webhook":
            assert settings.webhook_url is not None
            body = {"type": "laer.message", "account_id": account.id, "playbook": playbook,
                    "step": step, "message": message, "to": contact.email,
                    "subject": rendered.subject, "text": rendered.text}
            code = actions.post_webhook(settings.webhook_url,
                                        rt.settings.webhook_secret.get_secret_value().encode(),
                                        body, _short(key))
            if code >= 400:  # the receiver refused it; another try would not help
                actions.update_action(rt.sessions, key, "failed", f"http {code}")
                return Delivery(channel, rendered.subject, "failed", contact.email,
                                f"http {code}")
        else:
            actions.send_email(rt.settings.smtp, to=contact.email, subject=rendered.subject,
                               text=rendered.text, html=rendered.html,
                               message_id=f"{_short(key)}.{account.id}")
    except Exception as exc:
        actions.update_action(rt.sessions, key, "failed", f"{type(exc).__name__}: {exc}"[:250])
        raise
    actions.update_action(rt.sessions, key, "sent", None,
                          payload={"sent_at": now.isoformat(), "channel": channel})
    return Delivery(channel, rendered.subject, "sent", contact.email)


@task(retries=3, retry_delay_seconds=2, cache_policy=NO_CACHE, task_run_name="task-{name}")
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
    return Delivery("task", row.subject, row.status, row.recipient, None, row.due_at)
