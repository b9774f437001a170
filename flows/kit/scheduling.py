"""Queueing a later step (a row due at its instant), and a step's tags and logger."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any
from uuid import UUID

from flows.kit import clock
from flows.kit.current import current_step
from flows.kit.runtime import current_flow_run_id, runtime
from persistence.steps import step_values
from persistence.tables import PlaybookStepRow
from persistence.upsert import insert_if_absent


def run_name_for(playbook: str, account_id: str, step: str) -> str:
    """`onboarding/ACCOUNT/day-3`."""
    return f"{playbook}/{account_id}/{step}"


def _row(playbook: str, account_id: str, signal_id: str, step: str, delay_s: float,
         key: str, tags: list[str]) -> tuple[dict[str, Any], str]:
    """The step's row, due `delay_s` from now, and the line for the run's report."""
    now = clock.now()  # simulated in a backtest: queued and due on the same clock
    when = now + timedelta(seconds=max(0.0, delay_s))
    name = run_name_for(playbook, account_id, step)
    row = step_values(key=key, playbook=playbook, account_id=account_id, signal_id=signal_id,
                      step=step, due_at=when, tags=tags, run_name=name, now=now)
    return row, f"{step} at {when:%Y-%m-%d %H:%M:%S} UTC ({name})"


def queue_step(playbook: str, account_id: str, signal_id: str, step: str, delay_s: float,
               key: str, tags: list[str]) -> tuple[bool, str]:
    """Queue a later step of this playbook, due `delay_s` from now, once per `key`.

    Returns whether this call added it, and a line for the run's report.
    """
    row, line = _row(playbook, account_id, signal_id, step, delay_s, key, tags)
    with runtime().sessions() as session:
        added = insert_if_absent(session, PlaybookStepRow, row, key=("idempotency_key",))
        session.commit()
    return added, line


def schedule_step(playbook: str, account_id: str, signal_id: str, step: str, delay_s: float,
                  key: str, tags: list[str]) -> str:
    """Queue a later step (see `queue_step`); the line for the run's report.

    In an executor's step the row is added with the step's end, in the same transaction
    (see executor.py): one write fewer, and the two stand or fall together.
    """
    here = current_step()
    if here is None or here.queued is None:
        return queue_step(playbook, account_id, signal_id, step, delay_s, key, tags)[1]
    row, line = _row(playbook, account_id, signal_id, step, delay_s, key, tags)
    here.queued.append(row)
    return line


def tag_current_run(tags: list[str]) -> None:
    """Add account, stage and signal tags to the running step (shown in the Prefect UI)."""
    here = current_step()
    if here is not None:
        here.tags.update(tags)
        return
    run_id = current_flow_run_id()  # a playbook flow run by hand, outside an executor
    if run_id is None:
        return
    try:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            run = client.read_flow_run(UUID(run_id))
            merged = sorted(set(run.tags) | set(tags))
            if merged != sorted(run.tags):
                client.update_flow_run(UUID(run_id), tags=merged)
    except Exception:  # tags are a convenience: never fail a playbook over them
        return


def run_logger() -> logging.Logger | logging.LoggerAdapter[Any]:
    """Prefect's run logger inside a flow or task run, else the playbooks' own logger."""
    from prefect.context import FlowRunContext, TaskRunContext

    if FlowRunContext.get() is not None or TaskRunContext.get() is not None:
        from prefect.logging import get_run_logger

        return get_run_logger()
    return logging.getLogger("laer.playbooks")
