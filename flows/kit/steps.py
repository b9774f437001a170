"""The step machine every playbook runs on.

A playbook is a list of `Step`s. One flow run executes one step: it re-reads the signal and
the account, stops if the playbook's exit condition holds, performs the step's actions
(every message through the outreach gate) and schedules the next step as a future flow run
of the same deployment. Nothing sleeps: the wait lives in Prefect's scheduler.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.exceptions import ObjectNotFound
from prefect.logging import get_run_logger
from prefect.runtime import flow_run
from prefect.states import Scheduled

from flows.kit import actions
from flows.kit.registry import Playbook
from flows.kit.runtime import (
    app,
    current_flow_run_id,
    load_account,
    load_signal,
    mark_run,
    register_follow_up,
    tag_current_run,
)
from flows.kit.settings import playbook_settings
from flows.kit.templates import render
from laer_domain.model import Account, Contact, Role
from laer_domain.outreach import (
    AccountState,
    Defer,
    MessageIntent,
    Send,
    SentMessage,
    Suppress,
    decide,
)

LINKS_BASE = "https://success.laer.example"


@dataclass(frozen=True)
class SignalInfo:
    """The signal that started the playbook, as stored in the signals table."""

    id: str
    kind: str
    at: datetime
    stage: str
    evidence: dict[str, Any]

    @property
    def details(self) -> dict[str, Any]:
        """The rule's observed values."""
        return dict(self.evidence.get("details") or {})


@dataclass(frozen=True)
class Delivery:
    """What became of one action."""

    kind: str
    subject: str
    status: str
    recipient: str | None = None
    reason: str | None = None
    due_at: datetime | None = None


class StepContext:
    """What a step sees and can do: the account now, the signal, messages and tasks."""

    def __init__(self, playbook: Playbook, account: Account, signal: SignalInfo,
                 step: str) -> None:
        self.playbook = playbook
        self.account = account
        self.signal = signal
        self.step = step
        self.deliveries: list[Delivery] = []
        self.notes: list[str] = []
        self.retry_at: datetime | None = None  # earliest deferred message (gate clock)

    def note(self, text: str) -> None:
        """Add a line to the run's report."""
        self.notes.append(text)

    def contacts(self, roles: Sequence[str] = ()) -> list[Contact]:
        """Contacts with one of `roles` (all contacts if none has, or no roles given)."""
        chosen = [c for c in self.account.contacts if c.role in roles] if roles else []
        return chosen or list(self.account.contacts)

    def send(self, message: str, *, roles: Sequence[str] = (), promotional: bool = False,
             extra: dict[str, Any] | None = None) -> list[Delivery]:
        """Send the templated `message` to the contacts with `roles`, each through the gate."""
        contacts = self.contacts(roles)
        if not contacts:
            self.note(f"{message}: no contact to write to")
        out: list[Delivery] = []
        for contact in contacts:
            try:
                got = deliver_message(self.playbook.name, self.playbook.priority, self.signal.id,
                                      self.step, message, self.account, contact,
                                      promotional, extra or {})
            except Exception as exc:  # retries exhausted; the action row says failed
                got = Delivery("email", message, "failed", contact.email, str(exc)[:200])
            if got.status == "deferred" and got.due_at is not None:
                self.retry_at = min(self.retry_at or got.due_at, got.due_at)
            out.append(got)
        self.deliveries.extend(out)
        return out

    def assign(self, name: str, subject: str, *, role: Role | None = None,
               due_in_days: float = 2, details: dict[str, Any] | None = None,
               key: str | None = None) -> Delivery:
        """Create (once per `key`) a task for a person in `role` (default: the owner)."""
        key = key or f"{self.playbook.name}:{self.signal.id}:{self.step}:task:{name}"
        got = assign_task(self.playbook.name, self.signal.id, self.step, name, key,
                          self.account.id, subject, (role or self.playbook.owner).value,
                          due_in_days, details or {})
        self.deliveries.append(got)
        return got


StepAction = Callable[[StepContext], None]


@dataclass(frozen=True)
class Step:
    """One step: its name (`day-3`), when it falls due and what it does."""

    name: str
    run: StepAction
    day: float = 0.0  # playbook days after the first step
    # Optional event-time instant the step is due (e.g. term end - 60 days); overrides `day`.
    due: Callable[[Account, SignalInfo], datetime] | None = None


ExitCheck = Callable[[Account, SignalInfo, Step], "str | None"]


@dataclass
class StepResult:
    """The outcome of one run, for the report and the return value."""

    step: str
    stopped: str | None = None
    scheduled: list[str] = field(default_factory=list)


# --- tasks -------------------------------------------------------------------------------


@task(retries=3, retry_delay_seconds=2, cache_policy=NO_CACHE)
def fetch_signal(signal_id: str) -> SignalInfo | None:
    """Read the signal that started this playbook."""
    row = load_signal(signal_id)
    if row is None:
        return None
    return SignalInfo(row.id, row.kind, row.at, row.stage, dict(row.evidence))


@task(retries=3, retry_delay_seconds=2, cache_policy=NO_CACHE)
def fetch_account(account_id: str) -> Account | None:
    """Re-read the account as it is now."""
    return load_account(account_id)


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


def _history(rows: Sequence[Any]) -> list[SentMessage]:
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
    c, settings = app(), playbook_settings()
    key = f"{playbook}:{signal_id}:{step}:{message}:{_short(contact.email)}"
    done = actions.find_action(c.sessions, key)
    if done is not None and done.status in ("sent", "suppressed"):
        return Delivery(done.kind, done.subject, done.status, done.recipient, done.reason)
    now = settings.now()
    intent = MessageIntent(playbook=playbook, name=message, priority=priority,
                           channels=("email", "webhook"), promotional=promotional)
    decision = decide(intent, contact, AccountState.of(account),
                      _history(actions.sent_to(c.sessions, contact.email)), now,
                      settings.outreach_policy())
    rendered = render(message, message_context(account, contact, extra))
    channel = decision.channel if isinstance(decision, Send) else "email"
    fields: dict[str, Any] = dict(
        account_id=account.id, playbook=playbook, kind=channel, subject=rendered.subject,
        recipient=contact.email, flow_run_id=current_flow_run_id())
    info = {"template": message, "step": step, "priority": priority, "signal_id": signal_id}
    if isinstance(decision, Suppress):
        actions.upsert_action(c.sessions, key=key, status="suppressed", reason=decision.reason,
                              payload=info, **fields)
        return Delivery(channel, rendered.subject, "suppressed", contact.email, decision.reason)
    if isinstance(decision, Defer):
        actions.upsert_action(c.sessions, key=key, status="deferred", reason=decision.reason,
                              due_at=decision.until, payload=info, **fields)
        return Delivery(channel, rendered.subject, "deferred", contact.email, decision.reason,
                        decision.until)
    actions.upsert_action(c.sessions, key=key, status="pending", payload=info, **fields)
    try:
        if channel == "webhook":
            assert settings.webhook_url is not None
            body = {"type": "laer.message", "account_id": account.id, "playbook": playbook,
                    "step": step, "message": message, "to": contact.email,
                    "subject": rendered.subject, "text": rendered.text}
            code = actions.post_webhook(settings.webhook_url,
                                        c.settings.webhook_secret.get_secret_value().encode(),
                                        body, _short(key))
            if code >= 400:  # the receiver refused it; another try would not help
                actions.update_action(c.sessions, key, "failed", f"http {code}")
                return Delivery(channel, rendered.subject, "failed", contact.email,
                                f"http {code}")
        else:
            actions.send_email(c.settings.smtp, to=contact.email, subject=rendered.subject,
                               text=rendered.text, html=rendered.html,
                               message_id=f"{_short(key)}.{account.id}")
    except Exception as exc:
        actions.update_action(c.sessions, key, "failed", f"{type(exc).__name__}: {exc}"[:250])
        raise
    actions.update_action(c.sessions, key, "sent", None,
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
        app().sessions, key=key, account_id=account_id,
        playbook=playbook, kind="task", role=role, recipient=role, subject=subject[:256],
        status="open", flow_run_id=current_flow_run_id(), due_at=due,
        payload={"owner": role, "step": step, "signal_id": signal_id, **details})
    return Delivery("task", row.subject, row.status, row.recipient, None, row.due_at)


def run_name_for(playbook: str, account_id: str, step: str) -> str:
    """`onboarding/ACCOUNT/day-3`."""
    return f"{playbook}/{account_id}/{step}"


@task(retries=5, retry_delay_seconds=[1, 2, 5, 10, 30], cache_policy=NO_CACHE,
      task_run_name="schedule-{step}")
def schedule_step(playbook: str, account_id: str, signal_id: str, step: str, delay_s: float,
                  key: str, tags: list[str]) -> str:
    """Schedule a later step as a future flow run of this playbook's deployment."""
    deployment = f"{playbook}/laer"
    when = datetime.now(UTC) + timedelta(seconds=max(0.0, delay_s))
    with get_client(sync_client=True) as client:
        try:
            dep = client.read_deployment_by_name(deployment)
        except ObjectNotFound:
            return f"not scheduled: no deployment {deployment}"
        run = client.create_flow_run_from_deployment(
            dep.id, parameters={"account_id": account_id, "signal_id": signal_id, "step": step},
            state=Scheduled(scheduled_time=when), idempotency_key=key,
            name=run_name_for(playbook, account_id, step), tags=tags)
    state = (run.state.name if run.state else None) or "Scheduled"
    if run.state is None or run.state.type in (StateType.SCHEDULED, StateType.PENDING,
                                               StateType.RUNNING):
        register_follow_up(account_id=account_id, playbook=playbook, signal_id=signal_id,
                           key=key, flow_run_id=str(run.id), name=run.name, state=state)
    return f"{step} at {when:%Y-%m-%d %H:%M:%S} UTC ({run.name})"


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return (text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;")
            .replace(">", "&gt;").replace("\n", " "))


def report_markdown(playbook: Playbook, account_id: str, step: str,
                    signal: SignalInfo | None, account: Account | None,
                    ctx: StepContext | None, result: StepResult) -> str:
    """The run's artifact: why it started and what it did or suppressed."""
    lines = [f"# {playbook.name} · {_cell(account_id)} · {step}", ""]
    if signal is None:
        lines.append("Started by an unknown signal.")
    else:
        events = ", ".join(f"`{e}`" for e in signal.evidence.get("event_ids") or []) or "none"
        lines += [
            f"**Why:** signal `{signal.id}` **{signal.kind}** at {signal.at.isoformat()} "
            f"(stage {signal.stage}), rule `{_cell(signal.evidence.get('rule'))}`; "
            f"events {events}.",
            "",
            "```json",
            json.dumps(signal.details, indent=2, sort_keys=True, default=str)
            .replace("```", "'''"),
            "```",
        ]
    if account is not None:
        health = f"{account.health.score} {account.health.band}" if account.health else "n/a"
        risk = ", ".join(account.churn_risk.rules) if account.churn_risk else "none"
        lines += ["", f"**Account now:** stage {account.stage.value}, health {health}, "
                      f"churn risk {_cell(risk)}."]
    lines.append("")
    if result.stopped:
        lines.append(f"**Stopped:** {_cell(result.stopped)}")
    if ctx is not None and ctx.deliveries:
        lines += ["| action | to | subject | status | reason |", "|---|---|---|---|---|"]
        for d in ctx.deliveries:
            reason = d.reason or ""
            if d.status == "deferred" and d.due_at:
                reason = f"{reason} (until {d.due_at.isoformat()})"
            lines.append(f"| {d.kind} | {_cell(d.recipient)} | {_cell(d.subject)} | "
                         f"{d.status} | {_cell(reason)} |")
    if ctx is not None:
        lines += [f"- {_cell(n)}" for n in ctx.notes]
    lines += [f"- next: {_cell(s)}" for s in result.scheduled]
    return "\n".join(lines) + "\n"


@task(retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def publish_report(playbook: str, markdown: str) -> None:
    """Attach the run's markdown report (why it started, what it did) to the flow run."""
    create_markdown_artifact(key=f"{playbook.replace('_', '-')}-report", markdown=markdown,
                             description="Why this run started and what it did")


# --- the flow body ---------------------------------------------------------------------------


def run_namer(playbook: str, first_step: str) -> Callable[[], str]:
    """A flow_run_name callable giving `playbook/ACCOUNT/step`."""

    def name() -> str:
        params = flow_run.parameters
        step = str(params.get("step", "start"))
        return run_name_for(playbook, str(params.get("account_id", "?")),
                            first_step if step == "start" else step)

    return name


def _delay_s(account: Account, signal: SignalInfo, current: Step, nxt: Step) -> float:
    settings = playbook_settings()
    if nxt.due is not None:  # an event-time instant: wait what is left of it
        days = (nxt.due(account, signal) - account.clock) / timedelta(days=1)
    else:
        days = nxt.day - current.day
    return max(0.0, days) * settings.day_seconds


def run_playbook(playbook: Playbook, steps: Sequence[Step], should_stop: ExitCheck,
                 account_id: str, signal_id: str, step: str = "start") -> str:
    """Run one step of `playbook` for an account (call this from the playbook's flow)."""
    names = [s.name for s in steps]
    name = names[0] if step == "start" else step
    if name not in names:
        raise ValueError(f"{playbook.name} has no step {step!r}; steps: {', '.join(names)}")
    index = names.index(name)
    current = steps[index]
    logger = get_run_logger()
    mark_run("Running")
    result = StepResult(step=name)
    signal = fetch_signal(signal_id)
    account = fetch_account(account_id)
    ctx: StepContext | None = None
    if signal is None:
        result.stopped = f"signal {signal_id} not found"
    elif account is None:
        result.stopped = f"account {account_id} not found"
    else:
        result.stopped = should_stop(account, signal, current)
    if result.stopped is None and account is not None and signal is not None:
        ctx = StepContext(playbook, account, signal, name)
        current.run(ctx)
        settings = playbook_settings()
        base = f"{playbook.deployment}:{signal_id}"
        tags = [f"playbook:{playbook.name}", f"account:{account_id}",
                f"stage:{account.stage.value}", f"signal:{signal.kind}"]
        tag_current_run([*tags, f"step:{name}"])
        if ctx.retry_at is not None:  # quiet hours: ask the gate again when they end
            wait = (ctx.retry_at - settings.now()).total_seconds() * settings.day_seconds / 86400
            at = ctx.retry_at.strftime("%Y%m%dT%H%M")
            result.scheduled.append(schedule_step(
                playbook.name, account_id, signal_id, name, wait, f"{base}:{name}@{at}",
                [*tags, f"step:{name}"]))
        if index + 1 < len(steps):
            nxt = steps[index + 1]
            result.scheduled.append(schedule_step(
                playbook.name, account_id, signal_id, nxt.name,
                _delay_s(account, signal, current, nxt), f"{base}:{nxt.name}",
                [*tags, f"step:{nxt.name}"]))
    if result.stopped:
        logger.info("stopped: %s", result.stopped)
    publish_report(playbook.name, report_markdown(playbook, account_id, name, signal, account,
                                                  ctx, result))
    mark_run("Completed")
    done = [f"{d.kind}:{d.status}" for d in (ctx.deliveries if ctx else [])]
    return f"{name}: " + (f"stopped ({result.stopped})" if result.stopped
                          else ", ".join(done) or "nothing to do")
