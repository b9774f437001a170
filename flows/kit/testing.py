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
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

from sqlalchemy import func, select, update

from flows.kit.executor import ExecutorOptions, StepExecutor
from flows.kit.prefect_report import StepReporter
from flows.kit.registry import Discovered, discover
from flows.kit.runtime import reset_runtime
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


class PlaybookHarness:
    """A database, the lifecycle service over it and an in-process executor for playbooks."""

    def __init__(self, database_url: str, env: Mapping[str, str] | None = None,
                 policy: Policy | None = None, *, report_to_prefect: bool = False) -> None:
        self.database_url = database_url
        self.env = {"LAER_DATABASE_URL": database_url, **(env or {})}
        self.policy = policy or Policy()
        self._saved: dict[str, str | None] = {}
        self.engine = make_engine(database_url)
        upgrade(self.engine)
        self.sessions = session_factory(self.engine)
        self.reporter = StepReporter() if report_to_prefect else None

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
                signals.extend(service.handle(parse_event(raw)).signals)
            uow.commit()
        return signals

    def sweep(self, at: datetime) -> list[Signal]:
        """Run the daily sweep at event time `at`; returns the signals raised."""
        with UnitOfWork(self.sessions) as uow:
            outcomes = LifecycleService(uow.accounts, self.policy).sweep(at)
            uow.commit()
        return [s for o in outcomes for s in o.signals]

    # --- the playbook side -------------------------------------------------------------------

    @staticmethod
    def find(name: str) -> Discovered:
        """The discovered playbook called `name`."""
        for d in discover():
            if d.playbook.name == name:
                return d
        raise KeyError(f"no playbook {name!r}")

    def dispatch(self, name: str) -> int:
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
                                first_steps={name: found.first_step})
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

    def run(self, name: str, *, horizon_s: float = 30.0, max_runs: int = 40,
            options: ExecutorOptions | None = None) -> RunReport:
        """Dispatch `name`, then execute its steps (follow-ups and retries too), each at its
        due time, until none is left.

        A step due more than `horizon_s` from now is left queued (see RunReport.pending).
        """
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
        with self.sessions() as session:
            report.pending = list(session.scalars(select(PlaybookStepRow.run_name).where(
                PlaybookStepRow.playbook == name, PlaybookStepRow.status.in_(OPEN))
                .order_by(PlaybookStepRow.due_at)))
            report.actions = list(session.scalars(select(ActionRow).where(
                ActionRow.playbook == name).order_by(ActionRow.id)))
        return report
