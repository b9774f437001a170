"""The dispatcher: turns outbox signals into Prefect flow runs, each exactly once."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from prefect.client.orchestration import PrefectClient, get_client
from prefect.events.clients import EventsClient, get_events_client
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dispatch.journey import emit_journey
from dispatch.limit import AdaptiveLimit
from dispatch.retry import retrying, transient
from dispatch.run_states import FINAL_STATES, refresh_open_runs
from dispatch.settings import PrefectSettings
from flows.kit.registry import Playbook
from laer_domain.model import Stage
from laer_domain.signals import SignalKind
from persistence.tables import OutboxRow, PlaybookRunRow, SignalRow

log = logging.getLogger(__name__)

Plan = tuple[int, SignalRow, list[Playbook]]  # outbox id, its signal, the playbooks it starts


def idempotency_key(playbook: Playbook, signal_id: str) -> str:
    """One run per (deployment, signal), whoever asks and however often."""
    return f"{playbook.deployment}:{signal_id}"


@dataclass
class DispatchReport:
    started: int = 0
    coalesced: int = 0
    signals: int = 0


class Dispatcher:
    """Reads pending outbox rows and starts the playbooks their signals trigger."""

    def __init__(self, factory: sessionmaker[Session], playbooks: Sequence[Playbook],
                 settings: PrefectSettings | None = None, *,
                 client_factory: Callable[[], PrefectClient] = get_client,
                 events_client_factory: Callable[[], EventsClient] = get_events_client,
                 emit_events: bool = True, retry_for_s: float = 30.0) -> None:
        self.settings = settings or PrefectSettings()
        self._factory = factory
        self._playbooks = list(playbooks)
        self._client_factory = client_factory
        self._events_client_factory = events_client_factory
        self._deployment_ids: dict[str, UUID] = {}
        self._emit = emit_events
        self._retry_for_s = retry_for_s
        self._limit = AdaptiveLimit(self.settings.dispatch_concurrency)

    async def _retrying(self, fn: Callable[[], Awaitable[Any]]) -> Any:
        return await retrying(fn, for_s=self._retry_for_s, before_retry=self._limit.overloaded)

    async def _deployment_id(self, client: PrefectClient, playbook: Playbook) -> UUID:
        if playbook.deployment not in self._deployment_ids:
            dep = await self._retrying(lambda: client.read_deployment_by_name(playbook.deployment))
            self._deployment_ids[playbook.deployment] = dep.id
        return self._deployment_ids[playbook.deployment]

    async def drain(self, limit: int = 200) -> DispatchReport:
        """Dispatch up to `limit` pending signals; those Prefect refused stay pending.

        Accounts are handled concurrently (bounded), each account's signals in order; the
        bookkeeping for the whole batch is written in one transaction afterwards. A crash
        before that write is harmless: the idempotency keys return the same runs next time.
        """
        report = DispatchReport()
        with self._factory() as session:
            pending = [tuple(r) for r in session.execute(
                select(OutboxRow.id, SignalRow).join(SignalRow, SignalRow.id == OutboxRow.signal_id)
                .where(OutboxRow.status == "pending").order_by(OutboxRow.id).limit(limit)
            ).all()]
            if not pending:
                return report
            accounts = {sig.account_id for _, sig in pending}
            plans: list[Plan] = [(oid, sig, [pb for pb in self._playbooks if pb.wants(
                SignalKind(sig.kind), Stage(sig.stage),
                dict(sig.evidence.get("details") or {}))]) for oid, sig in pending]
            keys = [idempotency_key(pb, sig.id) for _, sig, pbs in plans for pb in pbs]
            done_keys = set(session.scalars(select(PlaybookRunRow.idempotency_key).where(
                PlaybookRunRow.idempotency_key.in_(keys)))) if keys else set()
            open_pairs = set(session.execute(
                select(PlaybookRunRow.account_id, PlaybookRunRow.playbook).where(
                    PlaybookRunRow.account_id.in_(accounts),
                    PlaybookRunRow.state.not_in(FINAL_STATES))).tuples())
        by_account: dict[str, list[Plan]] = {}
        for plan in plans:
            by_account.setdefault(plan[1].account_id, []).append(plan)
        gate = self._limit
        async with self._client_factory() as client:
            outcomes = await asyncio.gather(*(
                self._dispatch_account(client, items, done_keys, open_pairs, gate)
                for items in by_account.values()))
        now = datetime.now(UTC)
        with self._factory() as session:
            for runs, done, failed in outcomes:
                for run in runs:
                    session.add(run)
                    if run.state == "Coalesced":
                        report.coalesced += 1
                    else:
                        report.started += 1
                for oid, _signal in done:
                    row = session.get(OutboxRow, oid)
                    if row is not None:
                        row.status, row.done_at, row.last_error = "done", now, None
                    report.signals += 1
                for oid, exc in failed:
                    row = session.get(OutboxRow, oid)
                    if row is not None:
                        row.attempts += 1
                        row.last_error = f"{type(exc).__name__}: {exc}"[:2000]
            session.commit()
        # Announced after the batch is committed, not between run creations: on a
        # SQLite-backed server each event write competes with run creation for the database
        # lock, and a signal that Prefect refused is not announced again on every retry.
        if self._emit:
            await emit_journey(self._events_client_factory,
                               [(sig, runs) for runs, done, _ in outcomes for _, sig in done])
        return report

    async def _dispatch_account(
        self, client: PrefectClient, items: list[Plan],
        done_keys: set[str], open_pairs: set[tuple[str, str]], gate: AdaptiveLimit,
    ) -> tuple[list[PlaybookRunRow], list[tuple[int, SignalRow]],
               list[tuple[int, BaseException]]]:
        runs: list[PlaybookRunRow] = []
        done: list[tuple[int, SignalRow]] = []
        failed: list[tuple[int, BaseException]] = []
        for outbox_id, signal, playbooks in items:
            try:
                for playbook in playbooks:
                    key = idempotency_key(playbook, signal.id)
                    if key in done_keys:
                        continue  # dispatched before a crash: the row is the proof
                    pair = (signal.account_id, playbook.name)
                    if pair in open_pairs:
                        runs.append(self._run_row(signal, playbook, key, None, None,
                                                  "Coalesced"))
                        done_keys.add(key)
                        continue
                    async with gate:
                        run = await self._create_run(client, signal, playbook, key)
                    gate.succeeded()
                    runs.append(self._run_row(signal, playbook, key, str(run.id), run.name,
                                              run.state.name if run.state else "Scheduled"))
                    done_keys.add(key)
                    open_pairs.add(pair)
                done.append((outbox_id, signal))
            except Exception as exc:
                failed.append((outbox_id, exc))
                if transient(exc):
                    log.warning("Prefect unavailable (%s); will retry", exc)
                else:
                    log.exception("dispatch of %s failed", signal.id)
                break  # keep the account's order: its later signals wait for this one
        return runs, done, failed

    async def _create_run(self, client: PrefectClient, signal: SignalRow, playbook: Playbook,
                          key: str) -> Any:
        deployment_id = await self._deployment_id(client, playbook)
        # No tags here: on a SQLite-backed server they cut creation speed 2.5x. The run
        # inherits its deployment's playbook tag and tags itself with account and stage.
        return await self._retrying(functools.partial(
            client.create_flow_run_from_deployment, deployment_id,
            parameters={"account_id": signal.account_id, "signal_id": signal.id},
            idempotency_key=key))

    @staticmethod
    def _run_row(signal: SignalRow, playbook: Playbook, key: str, flow_run_id: str | None,
                 name: str | None, state: str) -> PlaybookRunRow:
        now = datetime.now(UTC)
        return PlaybookRunRow(
            account_id=signal.account_id, playbook=playbook.name, signal_id=signal.id,
            idempotency_key=key, flow_run_id=flow_run_id, flow_run_name=name, state=state,
            created_at=now, updated_at=now)

    async def refresh(self) -> None:
        """Refresh unfinished runs' states with a client of its own."""
        async with self._client_factory() as client:
            await self.refresh_open_runs(client)

    async def refresh_open_runs(self, client: PrefectClient) -> None:
        """Copy Prefect's state of unfinished runs into playbook_runs."""
        await refresh_open_runs(self._factory, client, self._retrying)

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Drain the outbox every `dispatch_interval_s` seconds until `stop` is set."""
        while not stop.is_set():
            try:
                await self.refresh()
            except Exception:
                log.exception("refreshing run states failed; dispatching anyway")
            try:
                report = await self.drain()
                if report.signals:
                    log.info("dispatched %d signals: %d runs started, %d coalesced",
                             report.signals, report.started, report.coalesced)
                    continue
            except Exception:
                log.exception("dispatcher cycle failed; retrying")
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.settings.dispatch_interval_s)
            except TimeoutError:
                pass
