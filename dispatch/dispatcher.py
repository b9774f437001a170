"""The dispatcher: turns outbox signals into playbook runs, each exactly once.

A run is a `playbook_runs` row and its first step, queued due now in `playbook_steps` in the
same transaction that marks the signal dispatched; executors (see flows/kit/executor.py)
take it from there. Nothing here waits on Prefect: a signal is dispatched in milliseconds,
and Prefect hears of it afterwards through the journey events.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from prefect.events.clients import EventsClient, get_events_client
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dispatch.journey import emit_journey
from dispatch.run_states import FINAL_STATES
from dispatch.settings import PrefectSettings
from flows.kit.registry import Playbook
from laer_domain.model import Stage
from laer_domain.signals import SignalKind
from persistence.steps import enqueue_step
from persistence.tables import OutboxRow, PlaybookRunRow, SignalRow

log = logging.getLogger(__name__)


def idempotency_key(playbook: Playbook, signal_id: str) -> str:
    """One run per (deployment, signal), whoever asks and however often."""
    return f"{playbook.deployment}:{signal_id}"


@dataclass
class DispatchReport:
    started: int = 0
    coalesced: int = 0
    signals: int = 0
    failed: int = 0  # signals that could not be dispatched this time (given up: dispatch_failed)


class Dispatcher:
    """Reads pending outbox rows and starts the playbooks their signals trigger."""

    def __init__(self, factory: sessionmaker[Session], playbooks: Sequence[Playbook],
                 settings: PrefectSettings | None = None, *,
                 first_steps: Mapping[str, str] | None = None,
                 events_client_factory: Callable[[], EventsClient] = get_events_client,
                 emit_events: bool = True,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.settings = settings or PrefectSettings()
        self._factory = factory
        self._playbooks = list(playbooks)
        self._first_steps = dict(first_steps or {})  # for run names only; steps say "start"
        self._events_client_factory = events_client_factory
        self._emit = emit_events
        self._clock = clock  # a backtest passes its simulated clock

    def _wanted(self, signal: SignalRow) -> list[Playbook]:
        details = dict(signal.evidence.get("details") or {})
        return [pb for pb in self._playbooks
                if pb.wants(SignalKind(signal.kind), Stage(signal.stage), details)]

    async def drain(self, limit: int = 500) -> DispatchReport:
        """Dispatch up to `limit` pending signals, in order, in one transaction.

        A signal whose playbooks cannot be worked out (an unknown kind, a playbook's `wants`
        raising) is tried again next time and, after `dispatch_attempts` tries, set
        `dispatch_failed` with its error: it never holds back the signals after it.
        """
        report = DispatchReport()
        now = self._clock()
        dispatched: list[tuple[SignalRow, list[PlaybookRunRow]]] = []
        with self._factory() as session:
            pending = [(o, s) for o, s in session.execute(
                select(OutboxRow, SignalRow).join(SignalRow, SignalRow.id == OutboxRow.signal_id)
                .where(OutboxRow.status == "pending").order_by(OutboxRow.id).limit(limit)
                .with_for_update(skip_locked=True, of=OutboxRow)).tuples()]
            if not pending:
                return report
            accounts = {sig.account_id for _, sig in pending}
            done_keys = set(session.scalars(select(PlaybookRunRow.idempotency_key).where(
                PlaybookRunRow.signal_id.in_([sig.id for _, sig in pending]))))
            open_pairs = set(session.execute(
                select(PlaybookRunRow.account_id, PlaybookRunRow.playbook).where(
                    PlaybookRunRow.account_id.in_(accounts),
                    PlaybookRunRow.state.not_in(FINAL_STATES))).tuples())
            for outbox, signal in pending:
                try:
                    playbooks = self._wanted(signal)
                except Exception as exc:  # noqa: BLE001 - any error: count it, go on
                    self._refused(outbox, exc)
                    report.failed += 1
                    continue
                runs = [self._start(session, signal, pb, self._first_steps.get(pb.name, "start"),
                                    done_keys, open_pairs, now) for pb in playbooks]
                started = [r for r in runs if r is not None]
                report.started += sum(r.state != "Coalesced" for r in started)
                report.coalesced += sum(r.state == "Coalesced" for r in started)
                outbox.status, outbox.done_at, outbox.last_error = "done", now, None
                report.signals += 1
                dispatched.append((signal, started))
            session.commit()
        if self._emit:  # the journey feed, after the commit: a view, not a record
            await emit_journey(self._events_client_factory, dispatched)
        return report

    def _refused(self, outbox: OutboxRow, exc: BaseException) -> None:
        outbox.attempts += 1
        outbox.last_error = f"{type(exc).__name__}: {exc}"[:2000]
        if outbox.attempts >= self.settings.dispatch_attempts:
            outbox.status = "dispatch_failed"
            log.error("signal %s not dispatched after %d attempts: %s", outbox.signal_id,
                      outbox.attempts, outbox.last_error)

    @staticmethod
    def _start(session: Session, signal: SignalRow, playbook: Playbook, first_step: str,
               done_keys: set[str], open_pairs: set[tuple[str, str]], now: datetime
               ) -> PlaybookRunRow | None:
        key = idempotency_key(playbook, signal.id)
        if key in done_keys:
            return None  # dispatched before a crash: the row is the proof
        done_keys.add(key)
        pair = (signal.account_id, playbook.name)
        state = "Coalesced" if pair in open_pairs else "Scheduled"
        name = f"{playbook.name}/{signal.account_id}/{first_step}"
        run = PlaybookRunRow(account_id=signal.account_id, playbook=playbook.name,
                             signal_id=signal.id, idempotency_key=key, flow_run_id=None,
                             flow_run_name=name, state=state, created_at=now, updated_at=now)
        session.add(run)
        if state == "Scheduled":
            open_pairs.add(pair)
            enqueue_step(session, key=key, playbook=playbook.name,
                         account_id=signal.account_id, signal_id=signal.id, step="start",
                         due_at=now, run_name=name,
                         tags=[f"playbook:{playbook.name}", f"account:{signal.account_id}",
                               f"stage:{signal.stage}", f"signal:{signal.kind}"], now=now)
        return run

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Drain the outbox every `dispatch_interval_s` seconds until `stop` is set.

        `stop` is checked between batches, so a SIGTERM with a backlog ends within one batch
        (well under a second); what is left stays pending for the next start.
        """
        while not stop.is_set():
            try:
                report = await self.drain(self.settings.dispatch_batch)
                if report.signals or report.failed:
                    log.info("dispatched %d signals: %d runs started, %d coalesced, "
                             "%d failed", report.signals, report.started, report.coalesced,
                             report.failed)
                    await asyncio.sleep(0)  # let a SIGTERM's handler set `stop` between batches
                    continue
            except Exception:
                log.exception("dispatcher cycle failed; retrying")
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.settings.dispatch_interval_s)
            except TimeoutError:
                pass
