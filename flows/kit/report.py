"""The markdown artifact of a run: why it started and what it sent, suppressed or scheduled.

It carries the ids of the provenance chain (events, signal, step execution, actions), so
`laer why` finds the same chain from what a person sees in Prefect.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from flows.kit.context import SignalInfo, StepContext
from flows.kit.current import current_step
from flows.kit.delivery import Delivery
from flows.kit.registry import Playbook
from flows.kit.settings import playbook_settings
from laer_domain.model import Account


@dataclass
class StepResult:
    """The outcome of one run, for the report and the return value."""

    step: str
    stopped: str | None = None
    scheduled: list[str] = field(default_factory=list)
    retried: list[Delivery] = field(default_factory=list)  # messages tried again this run


def mask_address(text: str | None) -> str | None:
    """`jane@example.com` as `j***@example.com` (a role such as `sales` stays as it is)."""
    if not text or "@" not in text:
        return text
    local, _, domain = text.rpartition("@")
    return f"{local[:1]}***@{domain}"


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
    here = current_step()
    if here is not None:
        lines += ["", f"**Step:** `{_cell(here.key)}` attempt {here.attempt}, "
                      f"task run `{here.task_run_id}`."]
    if signal is not None:
        lines += ["", f"**Chain:** `laer why --signal {signal.id}`; each action: "
                      "`laer why <id>`."]
    if account is not None:
        health = f"{account.health.score} {account.health.band}" if account.health else "n/a"
        risk = ", ".join(account.churn_risk.rules) if account.churn_risk else "none"
        lines += ["", f"**Account now:** stage {account.stage.value}, health {health}, "
                      f"churn risk {_cell(risk)}."]
    lines.append("")
    if result.stopped:
        lines.append(f"**Stopped:** {_cell(result.stopped)}")
    # Recipients are personal data: masked unless LAER_PLAYBOOK_SHOW_RECIPIENTS is set.
    show = playbook_settings().show_recipients
    done = ctx.deliveries if ctx is not None else []
    seen = {(d.kind, d.subject, d.recipient) for d in done}  # a retry the step reports too
    rows = [*(d for d in result.retried if (d.kind, d.subject, d.recipient) not in seen), *done]
    if rows:
        lines += ["| id | action | to | subject | status | reason |",
                  "|---|---|---|---|---|---|"]
        for d in rows:
            reason = d.reason or ""
            if d.status in ("deferred", "retrying") and d.due_at:
                reason = f"{reason} (until {d.due_at.isoformat()})"
            to = d.recipient if show else mask_address(d.recipient)
            lines.append(f"| {d.action_id or ''} | {d.kind} | {_cell(to)} | {_cell(d.subject)} | "
                         f"{d.status} | {_cell(reason)} |")
    if ctx is not None:
        lines += [f"- {_cell(n)}" for n in ctx.notes]
    lines += [f"- next: {_cell(s)}" for s in result.scheduled]
    return "\n".join(lines) + "\n"


def publish_report(playbook: str, markdown: str) -> None:
    """Attach the step's markdown report (why it started, what it did) to its Prefect run."""
    here = current_step()
    if here is not None:  # the executor publishes it with the step's task run
        here.markdown = markdown
        return
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(key=f"{playbook.replace('_', '-')}-report", markdown=markdown,
                             description="Why this run started and what it did")
