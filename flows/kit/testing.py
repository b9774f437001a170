"""Test a playbook without a broker: feed events, dispatch its signals, execute its steps.

    with PlaybookHarness("sqlite:///tmp/pb.db", env={"LAER_SMTP__PORT": "8025"}) as h:
        h.feed(events)                      # laer_domain.events.make_event(...) dicts
        report = h.run("onboarding")        # dispatch + execute every due step in-process
        assert [a.status for a in report.actions] == [...]

Everything is real but the broker: the lifecycle service writes account state, signals and
outbox rows into the database, the real dispatcher queues each run's first step, and the
real step executor runs each step, including the follow-ups and retries a step queues, at
its due time. Set LAER_PLAYBOOK_DAY_SECONDS small (e.g. 0.01) so that "wait 30 days" takes a
moment. With `report_to_prefect=True` every step is also reported to the Prefect API
(PREFECT_API_URL) as a task run with its artifact, as `laer serve` does.

With `simulated=True` nothing waits and nothing is sent: the steps run on a simulated clock
(flows/kit/clock.py) that starts at the latest event fed or swept and jumps to each step's
due instant; a playbook day is a day of event time, and every message is recorded as sent
(or suppressed, deferred) with the gate's decision, as the backtest does. No SMTP server,
broker or Prefect API is needed.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

from sqlalchemy import func, select, update

from flows.kit import clock
from flows.kit.executor import ExecutorOptions, StepExecutor
from flows.kit.prefect_report import StepReporter
from flows.kit.registry import Discovered, discover
from flows.kit.runtime import reset_runtime
from flows.kit.settings import event_time_settings, using_playbook_settings
from laer_domain.events import parse_event
from laer_domain.policy import Policy
from laer_domain.service import LifecycleService
from laer_domain.signals import Signal
from persistence.db import make_engine, upgrade
from persistence.steps import OPEN
from persistence.tables import ActionRow, OutboxRow, PlaybookStepRow
from persistence.uow import UnitOfWork, session_factory


@dataclass
class RunReport:
    """What running a playbook did: its step executions (name, state) and the actions stored."""

    runs: list[tuple[str, str]] = field(default_factory=list)
    actions: list[ActionRow] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)  # queued beyond the horizon
    now: datetime | None = None  # simulated mode: the simulated instant it ended at


class PlaybookHarness:
    """A database, the lifecycle service over it and an in-process executor for playbooks."""

    def __init__(self, database_url: str, env: Mapping[str, str] | None = None,
                 policy: Policy | None = None, *, report_to_prefect: bool = False,
                 simulated: bool = False) -> None:
        self.database_url = database_url
        self.env = {"LAER_DATABASE_URL": database_url, **(env or {})}
        self.policy = policy or Policy()
        self._saved: dict[str, str | None] = {}
        self.engine = make_engine(database_url)
        upgrade(self.engine)
        self.sessions = session_factory(self.engine)
        self.reporter = StepReporter() if report_to_prefect else None
        self.simulated = simulated
        self.now: datetime | None = None  # simulated mode: the latest event time seen

    def __enter__(self) -> PlaybookHarness:
        for key, value in self.env.items():
            # entered again (a test changing `env`): keep the value from before the first entry
            if key not in self._saved:
                self._saved[key] = os.environ.get(key)
            os.environ[key] = value
        reset_runtime()  # steps build their runtime from this environment
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.reporter is not None:
            self.reporter.close()
        for key, old in self._saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old
        reset_runtime()
        self.engine.dispose()

    # --- the domain side -----------------------------------------------------------------

    def feed(self, events: Iterable[Mapping[str, Any]]) -> list[Signal]:
        """Apply wire-shaped events (event time is theirs); returns the signals raised."""
        signals: list[Signal] = []
        with UnitOfWork(self.sessions) as uow:
            service = LifecycleService(uow.accounts, self.policy)
            for raw in events:
                event = parse_event(raw)
                signals.extend(service.handle(event).signals)
                self._seen(event.time)
            uow.commit()
        return signals

    def _seen(self, at: datetime) -> None:
        self.now = at if self.now is None else max(self.now, at)

    def sweep(self, at: datetime) -> list[Signal]:
        """Run the daily sweep at event time `at`; returns the signals raised."""
        with UnitOfWork(self.sessions) as uow:
            outcomes = LifecycleService(uow.accounts, self.policy).sweep(at)
            uow.commit()
        self._seen(at)
        return [s for o in outcomes for s in o.signals]

    # --- the playbook side -------------------------------------------------------------------

    @staticmethod
    def find(name: str) -> Discovered:
        """The discovered playbook called `name`."""
        for d in discover():
            if d.playbook.name == name:
                return d
        raise KeyError(f"no playbook {name!r}")

    def dispatch(self, name: str, clock: Callable[[], datetime] | None = None) -> int:
        """Let the real dispatcher start `name` for every stored signal that triggers it.

        Outbox rows are set pending again first, so running a second playbook later sees
        the same signals; the dispatcher's idempotency keys keep earlier runs from repeating.
        """
        from dispatch.dispatcher import Dispatcher

        found = self.find(name)
        with self.sessions() as session:  # each playbook under test sees every signal
            session.execute(update(OutboxRow).values(status="pending"))
            session.commit()
        dispatcher = Dispatcher(self.sessions, [found.playbook], emit_events=False,
                                first_steps={name: found.first_step},
                                clock=clock or (lambda: datetime.now(UTC)))
        report = asyncio.run(dispatcher.drain(limit=10_000))
        return report.started

    def executor(self, name: str, options: ExecutorOptions | None = None) -> StepExecutor:
        """A step executor for `name` alone (steps reach the database as `laer serve`'s do)."""
        return StepExecutor(self.sessions, {name: self.find(name)},
                            options or ExecutorOptions(threads=1, poll_s=0.01),
                            reporter=self.reporter)

    def _next_due(self, name: str) -> datetime | None:
        with self.sessions() as session:
            return session.scalar(select(func.min(PlaybookStepRow.due_at)).where(
                PlaybookStepRow.playbook == name, PlaybookStepRow.status.in_(OPEN)))

    def run(self, name: str, *, horizon_s: float | None = None, max_runs: int = 40,
            options: ExecutorOptions | None = None) -> RunReport:
        """Dispatch `name`, then execute its steps (follow-ups and retries too), each at its
        due time, until none is left.

        A step due more than `horizon_s` from now (default 30 s; simulated mode: simulated
        time, default 400 days) is left queued (see RunReport.pending).
        """
        if self.simulated:
            return self._run_simulated(name, horizon_s or 400 * 86400.0, max_runs, options)
        horizon_s = 30.0 if horizon_s is None else horizon_s
        self.dispatch(name)
        executor = self.executor(name, options)
        report = RunReport()
        while len(report.runs) < max_runs:
            due = self._next_due(name)
            if due is None or due > datetime.now(UTC) + timedelta(seconds=horizon_s):
                break
            # A step starts at its time, not before (retry backoff, follow-ups).
            time.sleep(max(0.0, (due - datetime.now(UTC)).total_seconds()))
            report.runs.extend(executor.run_due()[:max_runs - len(report.runs)])
        return self._finish(name, report)

    def _run_simulated(self, name: str, horizon_s: float, max_runs: int,
                       options: ExecutorOptions | None) -> RunReport:
        """`run` on the simulated clock: each step at its due instant, without waiting."""
        start = self.now or datetime.now(UTC)
        end = start + timedelta(seconds=horizon_s)
        report = RunReport()
        with clock.simulating(start) as sim, using_playbook_settings(event_time_settings()):
            self.dispatch(name, clock=lambda: sim.at)
            executor = self.executor(name, options or ExecutorOptions(threads=1))
            while len(report.runs) < max_runs:
                due = self._next_due(name)
                if due is None or due > end:
                    break
                sim.advance(due)
                report.runs.extend(executor.run_due(now=sim.at)[:max_runs - len(report.runs)])
            report.now = sim.at
        return self._finish(name, report)

    def _finish(self, name: str, report: RunReport) -> RunReport:
        """Fill in what is still queued and the actions stored."""
        with self.sessions() as session:
            report.pending = list(session.scalars(select(PlaybookStepRow.run_name).where(
                PlaybookStepRow.playbook == name, PlaybookStepRow.status.in_(OPEN))
                .order_by(PlaybookStepRow.due_at)))
            report.actions = list(session.scalars(select(ActionRow).where(
                ActionRow.playbook == name).order_by(ActionRow.id)))
        return report
