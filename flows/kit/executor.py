"""The step executor: a long-lived loop that leases due playbook steps and runs them in-process.

A step runs the playbook module's own flow function (`FLOW.fn`), so a module keeps its shape
and can still be run as a Prefect flow by hand. Each execution is reported to Prefect as a
task run named `playbook/ACCOUNT/step` (see prefect_report.py). Run more executors, in this
process (`threads`) or on other machines, against the same database to go faster.

The steps a step queues (its next one, a retry) are added with its end, in the transaction
that records it (`finish_step(queued=...)`): a step whose end was not recorded queued nothing,
and runs again when its lease runs out.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from flows.kit import clock
from flows.kit.current import CurrentStep, enter_step, leave_step
from flows.kit.prefect_report import Reporter, StepReport
from flows.kit.registry import Discovered
from persistence.steps import ClaimedStep, claim_due, finish_step, task_run_id

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class ExecutorOptions:
    """How an executor paces itself."""

    batch: int = 50  # steps leased per claim
    threads: int = 4  # steps run at once (they wait on SMTP, HTTP and the database)
    lease_s: float = 300.0  # a step not finished by then is taken over by another executor
    poll_s: float = 0.25  # wait between claims when nothing is due
    max_attempts: int = 8  # a step that keeps raising is marked failed after this many
    backoff_max_s: float = 600.0


def _backoff(attempt: int, cap: float) -> timedelta:
    return timedelta(seconds=min(cap, 2.0 ** attempt))


class StepExecutor:
    """Leases due steps and runs them with `threads` workers until stopped."""

    def __init__(self, sessions: sessionmaker[Session], playbooks: Mapping[str, Discovered],
                 options: ExecutorOptions | None = None, *,
                 reporter: Reporter | None = None,
                 owner: str | None = None) -> None:
        self.sessions = sessions
        self.playbooks = dict(playbooks)
        self.options = options or ExecutorOptions()
        self.reporter = reporter
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"

    def run_due(self, now: datetime | None = None) -> list[tuple[str, str]]:
        """Lease and run one batch of due steps; each one's run name and end state."""
        claimed = claim_due(self.sessions, self.owner, self.options.batch,
                            self.options.lease_s, now)
        if self.options.threads <= 1 or len(claimed) <= 1:
            return [self.execute(step) for step in claimed]
        with ThreadPoolExecutor(min(self.options.threads, len(claimed)),
                                thread_name_prefix="laer-step") as pool:
            return list(pool.map(self.execute, claimed))

    def run_forever(self, stop: threading.Event) -> None:
        """Run due steps until `stop` is set (finishes the batch in hand, then returns)."""
        log.info("executor %s running %d threads, %d steps a claim", self.owner,
                 self.options.threads, self.options.batch)
        while not stop.is_set():
            try:
                if self.run_due():
                    continue
            except Exception:  # the database gone: wait, then claim again
                log.exception("claiming steps failed; retrying")
            stop.wait(self.options.poll_s)

    def execute(self, step: ClaimedStep) -> tuple[str, str]:
        """Run one leased step and record how it ended; its run name and end state."""
        found = self.playbooks.get(step.playbook)
        started = clock.now()  # simulated under a backtest (see clock.py)
        current = CurrentStep(key=step.key, task_run_id=task_run_id(step.key, step.attempts),
                              tags=set(step.tags), attempt=step.attempts, queued=[])
        error: str | None = None
        outcome: str | None = None
        token = enter_step(current)
        try:
            if found is None:
                raise LookupError(f"no playbook {step.playbook!r} in this executor")
            fn: Callable[..., Any] = found.flow.fn
            outcome = str(fn(step.account_id, step.signal_id, step.step))
        except Exception as exc:  # a step's failure is recorded, never the executor's end
            error = f"{type(exc).__name__}: {exc}"
            log.warning("step %s failed (attempt %d): %s", step.key, step.attempts, error)
        finally:
            leave_step(token)
        ended = clock.now()
        if error is None:
            status, retry_at, state = "done", None, "Completed"
        elif step.attempts >= self.options.max_attempts:
            status, retry_at, state = "failed", None, "Failed"
        else:
            status, state = "due", "AwaitingRetry"
            retry_at = ended + _backoff(step.attempts, self.options.backoff_max_s)
        name = current.name or f"{step.playbook}/{step.account_id}/{step.step}"
        current.tags.add(f"step:{name.rsplit('/', 1)[-1]}")  # stopped steps are tagged too
        kept = finish_step(self.sessions, step, self.owner, status=status, outcome=outcome,
                           error=error, retry_at=retry_at, task_run_id=current.task_run_id,
                           run_name=name, now=ended, queued=current.queued or ())
        if not kept:
            log.warning("lease of %s was lost while it ran", step.key)
        if self.reporter is not None:
            self.reporter.publish(StepReport(
                task_run_id=current.task_run_id, name=name, tags=tuple(sorted(current.tags)),
                started=started, ended=ended, state=state, message=error or outcome or "",
                markdown=current.markdown,
                artifact_key=f"{step.playbook.replace('_', '-')}-report",
                attempt=step.attempts))
        return name, state
