"""Test a playbook without a broker: feed events, dispatch its signals, run its flow runs.

    with PlaybookHarness("sqlite:///tmp/pb.db", env={"LAER_SMTP__PORT": "8025"}) as h:
        h.feed(events)                      # laer_domain.events.make_event(...) dicts
        report = h.run("onboarding")        # dispatch + execute every due step in-process
        assert [a.status for a in report.actions] == [...]

Everything is real but the broker: the lifecycle service writes account state, signals and
outbox rows into the database, the real dispatcher creates flow runs from the playbook's
deployment on the Prefect API (PREFECT_API_URL), and each flow run, including the follow-ups
a step schedules, is executed in this process with Prefect's engine. Set
LAER_PLAYBOOK_DAY_SECONDS small (e.g. 0.01) so that "wait 30 days" takes a moment.
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
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.flow_engine import run_flow
from sqlalchemy import select, update

from flows.kit.registry import DEPLOYMENT_NAME, Discovered, discover
from flows.kit.runtime import reset_runtime
from laer_domain.events import parse_event
from laer_domain.policy import Policy
from laer_domain.service import LifecycleService
from laer_domain.signals import Signal
from persistence.db import make_engine, upgrade
from persistence.tables import ActionRow, OutboxRow, PlaybookRunRow
from persistence.uow import UnitOfWork, session_factory


@dataclass
class RunReport:
    """What running a playbook did: its flow runs (name, state) and the actions stored."""

    runs: list[tuple[str, str]] = field(default_factory=list)
    actions: list[ActionRow] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)  # scheduled beyond the horizon


class PlaybookHarness:
    """A database, the lifecycle service over it and an in-process runner for playbooks."""

    def __init__(self, database_url: str, env: Mapping[str, str] | None = None,
                 policy: Policy | None = None) -> None:
        self.database_url = database_url
        self.env = {"LAER_DATABASE_URL": database_url, **(env or {})}
        self.policy = policy or Policy()
        self._saved: dict[str, str | None] = {}
        self.engine = make_engine(database_url)
        upgrade(self.engine)
        self.sessions = session_factory(self.engine)
        self.deployed: set[str] = set()

    def __enter__(self) -> PlaybookHarness:
        for key, value in self.env.items():
            # entered again (a test changing `env`): keep the value from before the first entry
            if key not in self._saved:
                self._saved[key] = os.environ.get(key)
            os.environ[key] = value
        reset_runtime()  # flows build their runtime from this environment
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.cancel_pending()
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

    # --- the Prefect side ------------------------------------------------------------------

    @staticmethod
    def find(name: str) -> Discovered:
        """The discovered playbook called `name`."""
        for d in discover():
            if d.playbook.name == name:
                return d
        raise KeyError(f"no playbook {name!r}")

    def deploy(self, found: Discovered) -> None:
        """Register the playbook's deployment (`name/laer`), as `laer serve` does."""
        if found.playbook.name not in self.deployed:
            found.flow.to_deployment(name=DEPLOYMENT_NAME).apply()
            self.deployed.add(found.playbook.name)

    def dispatch(self, name: str) -> int:
        """Let the real dispatcher start `name` for every stored signal that triggers it.

        Outbox rows are set pending again first, so running a second playbook later sees
        the same signals; the dispatcher's idempotency keys keep earlier runs from repeating.
        """
        from dispatch.dispatcher import Dispatcher

        found = self.find(name)
        self.deploy(found)
        with self.sessions() as session:  # each playbook under test sees every signal
            session.execute(update(OutboxRow).values(status="pending"))
            session.commit()
        dispatcher = Dispatcher(self.sessions, [found.playbook], emit_events=False)
        report = asyncio.run(dispatcher.drain(limit=10_000))
        return report.started

    def _open_runs(self, name: str) -> list[FlowRun]:
        with self.sessions() as session:
            ids = [UUID(r) for r in session.scalars(select(PlaybookRunRow.flow_run_id).where(
                PlaybookRunRow.playbook == name, PlaybookRunRow.flow_run_id.is_not(None)))
                if r]
        if not ids:
            return []
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)),
                sort=FlowRunSort.EXPECTED_START_TIME_ASC, limit=len(ids))
        return [r for r in runs if r.state is not None
                and r.state.type in (StateType.SCHEDULED, StateType.PENDING)]

    def run(self, name: str, *, horizon_s: float = 30.0, max_runs: int = 40) -> RunReport:
        """Dispatch `name`, then execute its flow runs (follow-ups and retries too), each at
        its scheduled time, until none is left.

        A run scheduled more than `horizon_s` from now is left pending (see RunReport.pending).
        """
        found = self.find(name)
        self.dispatch(name)
        report = RunReport()
        for _ in range(max_runs):
            runs = sorted(self._open_runs(name), key=lambda r: r.expected_start_time
                          or datetime.now(UTC))
            if not runs:
                break
            nxt = runs[0]
            start = nxt.expected_start_time or datetime.now(UTC)
            if start > datetime.now(UTC) + timedelta(seconds=horizon_s):
                break
            # Play Prefect's scheduler: a run starts at its time, not before (retry backoff).
            time.sleep(max(0.0, (start - datetime.now(UTC)).total_seconds()))
            state = run_flow(found.flow, flow_run=nxt, parameters=dict(nxt.parameters),
                             return_type="state")
            report.runs.append((self._name(nxt.id), getattr(state, "name", str(state))))
        report.pending = [r.name for r in self._open_runs(name)]
        with self.sessions() as session:
            report.actions = list(session.scalars(select(ActionRow).where(
                ActionRow.playbook == name).order_by(ActionRow.id)))
        return report

    @staticmethod
    def _name(flow_run_id: UUID) -> str:
        with get_client(sync_client=True) as client:
            return client.read_flow_run(flow_run_id).name

    def cancel_pending(self) -> None:
        """Delete flow runs still scheduled for the playbooks run here (keeps servers tidy)."""
        for name in self.deployed:
            try:
                runs = self._open_runs(name)
                with get_client(sync_client=True) as client:
                    for r in runs:
                        client.delete_flow_run(r.id)
            except Exception:  # best effort on teardown
                pass
