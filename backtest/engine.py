"""The discrete-event simulator: the real lifecycle service, dispatcher and step executor,
driven by a simulated clock over a fresh database instead of by Kafka, Prefect and time.

A priority queue of three kinds of item, ordered by simulated time: the input events
(sorted by event time, whatever order they came in), the daily sweep (06:00 UTC, as the ops
flow runs it) and the due playbook steps (rows in `playbook_steps`, the next one read from
the database). Events are applied in small batches through `LifecycleService` and the
consumer's batch repository, the dispatcher drains the outbox at the batch's instant, and
due steps run in this thread on the StepExecutor with `claim_due(now=simulated now)`; every
"now" the step machinery reads is that instant (flows/kit/clock.py), and deliveries are
recorded, never sent. Nothing sleeps and nothing connects but the database.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time
from typing import Any

from sqlalchemy import Engine, event, func, select
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import QueuePool

from backtest.replay_repository import Key, ReplayRepository
from backtest.stats import BacktestStats, Input, parse_input
from dispatch.dispatcher import Dispatcher
from flows.kit import clock
from flows.kit.executor import ExecutorOptions, StepExecutor
from flows.kit.registry import Discovered, discover
from flows.kit.runtime import reset_runtime
from flows.kit.settings import event_time_settings, using_playbook_settings
from laer_domain.events import CloudEvent
from laer_domain.model import Stage
from laer_domain.policy import Policy
from laer_domain.resequence import event_key
from laer_domain.service import LifecycleService
from persistence.account_cache import AccountCache
from persistence.db import make_engine, upgrade
from persistence.tables import AccountRow, PlaybookStepRow, ProcessedEventRow
from persistence.uow import UnitOfWork, session_factory

SWEEP_AT = clock_time(6, 0)  # the daily-sweep ops flow's cron, 0 6 * * *


@dataclass(frozen=True)
class BacktestOptions:
    """What to replay with: playbooks, thresholds, playbook settings, batching, horizon."""

    playbooks: Sequence[str] | None = None  # None: every discovered playbook
    policy: Policy = field(default_factory=Policy)
    playbook_settings: Mapping[str, Any] = field(default_factory=dict)
    # Events within this much event time of a batch's first go in one transaction; the
    # dispatcher then sees their signals at the batch's last instant (at most this late).
    batch_window: timedelta = timedelta(hours=1)
    batch_max: int = 1000
    sweep_at: clock_time | None = SWEEP_AT  # None: no daily sweep
    until: datetime | None = None  # keep running steps and sweeps up to here after the input
    after_days: float = 0.0  # or this many days after the last input event
    step_batch: int = 200
    # Shortcuts that leave every result as it was: quiet windows (no signal) share one
    # transaction, the dedup ledger is kept in memory. False: one transaction per window,
    # the reference path the tests compare with.
    shortcuts: bool = True
    chunk_max: int = 5000  # events prefetched for one transaction of windows


def chosen_playbooks(names: Sequence[str] | None) -> dict[str, Discovered]:
    """The discovered playbooks called `names` (all of them if None)."""
    found = {d.playbook.name: d for d in discover()}
    if names is None:
        return found
    unknown = sorted(set(names) - set(found))
    if unknown:
        raise KeyError(f"no playbook {', '.join(unknown)}; known: {', '.join(sorted(found))}")
    return {n: found[n] for n in names}


def _engine(url: str) -> Engine:
    if not url.startswith("sqlite"):
        return make_engine(url)
    engine = make_engine(url, poolclass=QueuePool, pool_size=4, max_overflow=4)

    @event.listens_for(engine, "connect")
    def _throwaway(dbapi_conn: Any, _record: Any) -> None:
        # the output of a replay, rebuilt by running it again: no fsync for each commit
        dbapi_conn.execute("PRAGMA synchronous=OFF")

    return engine


def _next_sweep(after: datetime, at: clock_time) -> datetime:
    day = datetime.combine(after.date(), at, tzinfo=UTC)
    return day if day > after else day + timedelta(days=1)


class Backtest:
    """One replay into the database at `database_url` (migrated here; use a fresh one)."""

    def __init__(self, database_url: str, options: BacktestOptions | None = None, *,
                 progress: Callable[[BacktestStats], None] | None = None) -> None:
        self.database_url = database_url
        self.options = options or BacktestOptions()
        self.progress = progress
        self.stats = BacktestStats()
        self.engine = _engine(database_url)
        upgrade(self.engine)
        self.sessions: sessionmaker[Session] = session_factory(self.engine)
        self.playbooks = chosen_playbooks(self.options.playbooks)
        # committed account states, reused while their row is unchanged (as the consumer)
        self.cache = AccountCache(1_000_000)
        with self.sessions() as session:  # the dedup ledger (empty in a fresh database)
            self.ledger: set[Key] = set(session.execute(
                select(ProcessedEventRow.source, ProcessedEventRow.event_id)).tuples())
        self.lagging: dict[str, datetime] = {}  # see ReplayRepository

    def run(self, raw_events: Iterable[Input]) -> BacktestStats:
        """Replay `raw_events` (CloudEvents, wire-shaped or decoded, in any order)."""
        cpu = time.process_time()
        started = self.stats.started = time.perf_counter()
        with self.stats.phase("parse"):
            events = parse_input(raw_events, self.stats)
        saved = os.environ.get("LAER_DATABASE_URL")
        os.environ["LAER_DATABASE_URL"] = self.database_url  # the steps' runtime reads it
        reset_runtime()
        begin = events[0].time if events else (self.options.until or datetime.now(UTC))
        def counted(*_args: Any) -> None:
            self.stats.count_statement()

        # on the class: the steps' runtime opens its own engine on the same database
        event.listen(Engine, "before_cursor_execute", counted)
        try:
            with clock.simulating(begin) as sim, \
                    using_playbook_settings(event_time_settings(self.options.playbook_settings)):
                with asyncio.Runner() as self._runner:
                    self._loop(events, sim)
                with self.stats.phase("sweep"):
                    self._catch_up(sim.at)
        finally:
            event.remove(Engine, "before_cursor_execute", counted)
            reset_runtime()
            if saved is None:
                os.environ.pop("LAER_DATABASE_URL", None)
            else:
                os.environ["LAER_DATABASE_URL"] = saved
            self.stats.elapsed_s = time.perf_counter() - started
            self.stats.cpu_s = time.process_time() - cpu
        with self.sessions() as session:
            self.stats.pending_steps = session.scalar(select(func.count()).where(
                PlaybookStepRow.status == "due")) or 0
        if self.progress is not None:
            self.progress(self.stats)
        return self.stats

    def close(self) -> None:
        """Release the database."""
        self.engine.dispose()

    # --- the queue -------------------------------------------------------------------------

    def _loop(self, events: list[CloudEvent], sim: clock.SimClock) -> None:
        opts = self.options
        dispatcher = Dispatcher(self.sessions, [d.playbook for d in self.playbooks.values()],
                                emit_events=False, clock=lambda: sim.at,
                                first_steps={n: d.first_step for n, d in self.playbooks.items()})
        executor = StepExecutor(self.sessions, self.playbooks, ExecutorOptions(
            threads=1, batch=opts.step_batch, lease_s=3600.0, max_attempts=3),
            owner="backtest")
        last = self.stats.last + timedelta(days=opts.after_days) if self.stats.last else None
        horizon = max([t for t in (last, opts.until) if t is not None], default=sim.at)
        sweep = _next_sweep(sim.at, opts.sweep_at) if opts.sweep_at is not None else None
        i, n, shown = 0, len(events), 0.0
        step_at = self._next_due()
        while True:
            event_at = events[i].time if i < n else None
            times = [t for t in (event_at, sweep, step_at) if t is not None and t <= horizon]
            if not times:
                break
            at = min(times)
            if event_at == at:  # ties: events first, then the sweep, then the steps
                windows = self._windows(events, i, sweep, step_at)
                with self.stats.phase("events"):
                    j, signals = self._apply(events, i, windows, sim)
                if signals:
                    step_at = self._dispatch(dispatcher, step_at, sim.at)
                i = j
            elif sweep == at:
                sim.advance(at)
                with self.stats.phase("sweep"):
                    raised = self._sweep(at)
                self.stats.sweeps += 1
                self.stats.signals += raised
                if raised:
                    step_at = self._dispatch(dispatcher, step_at, sim.at)
                sweep = at + timedelta(days=1)
            else:
                sim.advance(at)
                with self.stats.phase("steps"):
                    ran = executor.run_due(now=sim.at)
                    self.stats.steps.update(state for _, state in ran)
                # what these steps queued for now comes round again (a read, not a claim)
                step_at = self._next_due()
            self.stats.now = sim.at
            if self.progress is not None and time.perf_counter() - shown > 0.2:
                shown = time.perf_counter()
                self.progress(self.stats)

    def _next_due(self) -> datetime | None:
        with self.stats.phase("queue"), self.sessions() as session:
            return session.scalar(select(func.min(PlaybookStepRow.due_at)).where(
                PlaybookStepRow.status == "due"))

    def _windows(self, events: list[CloudEvent], i: int, sweep: datetime | None,
                 step_at: datetime | None) -> list[int]:
        """Where the windows from `events[i]` on end, as the queue would cut them one after
        another while none raises a signal (the sweep and the due steps stay put meanwhile).

        A window holds the events within `batch_window` of its first (and every event at
        that first instant), up to `batch_max`, and ends before the sweep or a due step; the
        next one starts only if its first event comes before both.
        """
        opts = self.options
        n, ends = len(events), []
        bound = min((t for t in (sweep, step_at) if t is not None), default=None)
        start = i
        while True:
            event_at = events[start].time
            limit = event_at + opts.batch_window if bound is None else min(
                bound, event_at + opts.batch_window)
            j = start
            while (j < n and j - start < opts.batch_max
                   and (events[j].time < limit or events[j].time == event_at)):
                j += 1
            ends.append(j)
            start = j
            if (not opts.shortcuts or j >= n or j - i >= opts.chunk_max
                    or (bound is not None and events[j].time > bound)):
                return ends

    def _apply(self, events: list[CloudEvent], i: int, ends: list[int],
               sim: clock.SimClock) -> tuple[int, int]:
        """The windows of `events[i:]` ending at `ends`, through the lifecycle service in one
        transaction as the consumer applies a batch, up to and including the first window
        that raises a signal; where the next window starts, and the number of new signals."""
        with UnitOfWork(self.sessions) as uow:
            repo = self._repository(uow.session, sim.at)
            repo.prefetch(events[i:ends[-1]])
            handler = LifecycleService(repo, self.options.policy).batch(reload=repo.reload)
            start = i
            for end in ends:
                repo.through = event_key(events[end - 1])
                raised = False
                for event in events[start:end]:
                    status: str
                    try:
                        result = handler.handle(event)
                        status, raised = result.status, raised or bool(result.signals)
                    except Exception as exc:  # noqa: BLE001 - the consumer dead-letters it
                        status = "failed"
                        self.stats.failures.append(f"{event.source}/{event.id}: "
                                                   f"{type(exc).__name__}: {exc}"[:300])
                    self.stats.statuses[status] += 1
                start = end
                if raised:  # dispatched at this window's end, before any later event
                    break
            sim.advance(events[start - 1].time)
            repo.now = sim.at
            signals = repo.write()
            uow.commit()
        self._committed(repo)
        self.stats.signals += signals
        self.stats.done += start - i
        self.stats.batches += 1
        return start, signals

    def _sweep(self, at: datetime) -> int:
        """The daily sweep of every live account at `at`, in one transaction; new signals.

        The same service call as the ops flow's sweep, through the consumer's bulk repository
        (one write for all accounts instead of a flush per account).
        """
        with UnitOfWork(self.sessions) as uow:
            repo = self._repository(uow.session, at, sweeping=self.options.shortcuts)
            ids = list(uow.session.scalars(select(AccountRow.id).where(
                AccountRow.stage != Stage.CHURNED.value).order_by(AccountRow.id)))
            repo.prefetch_accounts(ids)
            accounts = [a for i in ids if (a := repo.accounts.get(i)) is not None]
            LifecycleService(repo, self.options.policy).sweep(at, accounts)
            signals = repo.write()
            uow.commit()
        self._committed(repo)
        return signals

    def _repository(self, session: Session, now: datetime, *, sweeping: bool = False
                    ) -> ReplayRepository:
        """A repository for one transaction, with the shortcuts the options allow."""
        return ReplayRepository(session, now=now, cache=self.cache,
                                ledger=self.ledger if self.options.shortcuts else None,
                                lagging=self.lagging, sweeping=sweeping)

    def _committed(self, repo: ReplayRepository) -> None:
        """What a committed transaction tells the cache, the ledger and the lagging clocks."""
        self.cache.put(repo.committed_accounts())
        self.ledger.update(repo.written_keys())
        for account_id in repo.written_accounts():
            self.lagging.pop(account_id, None)
        self.lagging.update(repo.moved)

    def _catch_up(self, now: datetime) -> None:
        """Write the rows whose clock a sweep moved without writing them (the end state)."""
        if not self.lagging:
            return
        with UnitOfWork(self.sessions) as uow:
            repo = self._repository(uow.session, now)
            ids = sorted(self.lagging)
            repo.prefetch_accounts(ids)
            for account_id in ids:
                if (account := repo.accounts.get(account_id)) is not None:
                    repo.add_or_update(account)
            repo.write()
            uow.commit()
        self._committed(repo)

    def _dispatch(self, dispatcher: Dispatcher, step_at: datetime | None, now: datetime
                  ) -> datetime | None:
        """Drain the outbox at `now`; when the next step is due after that."""
        with self.stats.phase("dispatch"):
            started = self._drain(dispatcher)
        if not self.options.shortcuts:
            return self._next_due()
        # a started run's first step is queued due now; nothing else changed in the queue
        return step_at if not started else now if step_at is None else min(step_at, now)

    def _drain(self, dispatcher: Dispatcher) -> int:
        """Dispatch every pending signal; the number of runs started."""
        started = 0
        while True:
            report = self._runner.run(dispatcher.drain(limit=5000))
            self.stats.runs_started += report.started
            self.stats.runs_coalesced += report.coalesced
            started += report.started
            if report.signals + report.failed < 5000:
                return started
