"""Each executed step shown in Prefect: a task run `playbook/ACCOUNT/step` with its tags and
its markdown artifact, reported in the background so steps never wait on the Prefect API.

A step is reported the way Prefect's own task engine reports a task run — a state event the
server's task-run recorder turns into the run — but one event per step, not three, and
with no concurrency-slot or result-storage calls: the task engine measured 12–20 runs/s
per process here, against a budget of 50 steps/s. The database is the record of what a
step did; this is the view, so a Prefect outage delays it and never stops a step.
"""

from __future__ import annotations

import contextvars
import logging
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

log = logging.getLogger(__name__)

TASK_KEY = "laer-playbook-step"


@dataclass(frozen=True)
class StepReport:
    """One executed step, as Prefect will show it."""

    task_run_id: str
    name: str
    tags: tuple[str, ...]
    started: datetime
    ended: datetime
    state: str  # Completed, Failed or AwaitingRetry
    message: str
    markdown: str | None
    artifact_key: str | None
    attempt: int = 1


def _emit(report: StepReport) -> None:
    from prefect.client.schemas.objects import State, StateDetails, TaskRun, TaskRunPolicy
    from prefect.states import AwaitingRetry, Completed, Failed, Running
    from prefect.utilities.engine import emit_task_run_state_change_event

    rid = UUID(report.task_run_id)
    details = StateDetails(task_run_id=rid)
    running: State[Any] = Running(state_details=details)
    running.timestamp = report.started
    make = {"Completed": Completed, "Failed": Failed, "AwaitingRetry": AwaitingRetry}
    final: State[Any] = make.get(report.state, Completed)(state_details=details,
                                                           message=report.message)
    final.timestamp = report.ended
    run = TaskRun(id=rid, name=report.name, task_key=TASK_KEY,
                  dynamic_key=report.task_run_id, tags=list(report.tags),
                  empirical_policy=TaskRunPolicy(), expected_start_time=report.started,
                  start_time=report.started, end_time=report.ended, run_count=report.attempt,
                  state=final, state_id=final.id, state_type=final.type, state_name=final.name,
                  created=report.started, updated=report.ended,
                  total_run_time=report.ended - report.started)
    emit_task_run_state_change_event(run, running, final)


class StepReporter:
    """Reports executed steps to the Prefect API from background threads, in order of arrival."""

    def __init__(self, *, artifact_threads: int = 4, max_backlog: int = 20_000) -> None:
        # Prefect's settings (its API URL) may live in a context variable: threads copy it.
        self._context = contextvars.copy_context()
        self._queue: queue.Queue[StepReport | None] = queue.Queue(maxsize=max_backlog)
        self._artifacts = ThreadPoolExecutor(artifact_threads, thread_name_prefix="laer-art")
        self._local = threading.local()
        self._thread = threading.Thread(target=self._context.copy().run, args=(self._run,),
                                        name="laer-step-reporter", daemon=True)
        self._started = False
        self._pending = 0  # reports not yet fully sent
        self._idle = threading.Condition()
        self.reported = 0
        self.failed = 0

    def publish(self, report: StepReport) -> None:
        """Queue a report (blocks only when the backlog is full: Prefect far behind)."""
        if not self._started:
            self._started = True
            self._thread.start()
        with self._idle:
            self._pending += 1
        self._queue.put(report)

    def _done(self) -> None:
        with self._idle:
            self._pending -= 1
            self._idle.notify_all()

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every report so far is sent (events handed to Prefect's worker)."""
        with self._idle:
            sent = self._idle.wait_for(lambda: self._pending == 0, timeout)
        from prefect.events.worker import EventsWorker

        EventsWorker.drain_all(timeout=timeout)
        return sent

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            from prefect.client.orchestration import get_client

            client = get_client(sync_client=True)
            client.__enter__()
            self._local.client = client
        return client

    def _artifact(self, report: StepReport) -> None:
        from prefect.client.schemas.actions import ArtifactCreate

        try:
            self._client().create_artifact(ArtifactCreate(
                key=report.artifact_key, type="markdown", data=report.markdown,
                description="Why this step ran and what it did",
                task_run_id=UUID(report.task_run_id)))
            self.reported += 1
        except Exception as exc:  # the view lags; the step's rows are the record
            self.failed += 1
            log.warning("artifact of %s not published: %s", report.name, exc)
        finally:
            self._done()

    def _run(self) -> None:
        while True:
            report = self._queue.get()
            if report is None:
                return
            try:
                _emit(report)
            except Exception as exc:
                self.failed += 1
                log.warning("task run of %s not reported: %s", report.name, exc)
            if report.markdown:
                self._artifacts.submit(self._context.copy().run, self._artifact, report)
            else:
                self.reported += 1
                self._done()

    def close(self, timeout: float = 10.0) -> None:
        """Send what is queued (within `timeout`), then stop the threads."""
        if self._started:
            self._queue.put(None)
            self._thread.join(timeout)
        self._artifacts.shutdown(wait=True, cancel_futures=False)
        from prefect.events.worker import EventsWorker

        try:
            EventsWorker.drain_all(timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - shutting down; the rows are the record
            log.warning("events not drained: %s", exc)


class Reporter(Protocol):
    """What an executor hands its finished steps to."""

    def publish(self, report: StepReport) -> None:
        """Queue one step's report (never waits on the Prefect API)."""

    def close(self, timeout: float = 10.0) -> None:
        """Send what is queued, then stop."""


def _report_from_queue(reports: Any, niceness: int, api_url: str | None) -> None:
    """The reporter process: report what arrives until the None that ends it."""
    import os
    import signal

    if api_url:  # the executor's API, even one set in a settings context, not the env
        os.environ["PREFECT_API_URL"] = api_url
    # The executor's process group gets the SIGTERM; this child finishes the queue instead
    # and ends on the executor's sentinel (or when the executor is gone).
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if niceness:
        os.nice(niceness)
    parent = os.getppid()
    reporter = StepReporter()
    try:
        while True:
            try:
                report = reports.get(timeout=5.0)
            except queue.Empty:
                if os.getppid() != parent:  # the executor died without its sentinel
                    return
                continue
            if report is None:
                return
            reporter.publish(report)
    finally:
        reporter.close(timeout=30.0)


class ProcessReporter:
    """A StepReporter in a child process: its CPU (building events, HTTP) leaves the
    executor's interpreter, whose GIL the steps need; a lower priority lets steps go first
    under load while the view catches up."""

    def __init__(self, *, niceness: int = 5) -> None:
        import multiprocessing

        from prefect.settings import PREFECT_API_URL

        self._mp = multiprocessing.get_context("spawn")  # no fork of a threaded process
        self._niceness = niceness
        self._api_url = PREFECT_API_URL.value()
        self._queue: Any = self._mp.Queue()
        self._process: Any = None
        self._lock = threading.Lock()

    def _ensure(self) -> None:
        if self._process is not None and self._process.is_alive():
            return
        with self._lock:
            if self._process is not None and self._process.is_alive():
                return
            if self._process is not None:
                log.warning("step reporter process ended (%s); starting another",
                            self._process.exitcode)
            self._process = self._mp.Process(target=_report_from_queue,
                                             args=(self._queue, self._niceness,
                                                   self._api_url),
                                             name="laer-step-reporter", daemon=False)
            self._process.start()

    def publish(self, report: StepReport) -> None:
        """Hand a report to the child (pickled by the queue's feeder thread)."""
        self._ensure()
        self._queue.put(report)

    def close(self, timeout: float = 30.0) -> None:
        """Let the child send what is queued (within `timeout`), then stop it."""
        if self._process is None:
            return
        self._queue.put(None)
        self._queue.close()
        self._queue.join_thread()
        self._process.join(timeout)
        if self._process.is_alive():
            log.warning("step reporter did not finish within %.0f s; stopped", timeout)
            self._process.kill()
            self._process.join()
