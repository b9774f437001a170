"""The dispatcher: turns outbox signals into Prefect flow runs, each exactly once."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import httpx
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.sorting import FlowRunSort
from prefect.events import emit_event
from prefect.exceptions import PrefectHTTPStatusError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_delay,
    wait_random_exponential,
)

from flows.kit.registry import Playbook
from laer_domain.model import Stage
from laer_domain.persistence.tables import OutboxRow, PlaybookRunRow, SignalRow
from laer_domain.signals import SignalKind

log = logging.getLogger(__name__)

FINAL_STATES = {"Completed", "Failed", "Cancelled", "Crashed", "Coalesced", "Skipped"}


def _transient(exc: BaseException) -> bool:
    """Prefect down, overloaded (503) or rate limiting (429): worth another try."""
    if isinstance(exc, PrefectHTTPStatusError):
        return exc.response.status_code in {408, 429, 500, 502, 503, 504}
    return isinstance(exc, httpx.TransportError | httpx.TimeoutException | OSError)


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
                 client_factory: Callable[[], PrefectClient] = get_client,
                 emit_events: bool = True, retry_for_s: float = 30.0) -> None:
        self._factory = factory
        self._playbooks = list(playbooks)
        self._client_factory = client_factory
        self._deployment_ids: dict[str, UUID] = {}
        self._emit = emit_events
        self._retry_for_s = retry_for_s

    async def _retrying(self, fn: Callable[[], Any]) -> Any:
        async for attempt in AsyncRetrying(
                retry=retry_if_exception(_transient), reraise=True,
                wait=wait_random_exponential(multiplier=0.2, max=5),
                stop=stop_after_delay(self._retry_for_s)):
            with attempt:
                return await fn()
        raise AssertionError("unreachable")  # pragma: no cover

    async def _deployment_id(self, client: PrefectClient, playbook: Playbook) -> UUID:
        if playbook.deployment not in self._deployment_ids:
            dep = await self._retrying(lambda: client.read_deployment_by_name(playbook.deployment))
            self._deployment_ids[playbook.deployment] = dep.id
        return self._deployment_ids[playbook.deployment]

    async def drain(self, limit: int = 50) -> DispatchReport:
        """Dispatch up to `limit` pending signals; leaves them pending if Prefect is down."""
        report = DispatchReport()
        with self._factory() as session:
            pending = session.execute(
                select(OutboxRow, SignalRow).join(SignalRow, SignalRow.id == OutboxRow.signal_id)
                .where(OutboxRow.status == "pending").order_by(OutboxRow.id).limit(limit)
            ).all()
        if not pending:
            return report
        async with self._client_factory() as client:
            await self.refresh_open_runs(client)
            for outbox, signal in pending:
                try:
                    started, coalesced = await self._dispatch_one(client, signal)
                except Exception as exc:
                    self._note_failure(outbox.id, exc)
                    if _transient(exc):
                        log.warning("Prefect unavailable (%s); will retry", exc)
                        break  # keep order: later signals wait for this one
                    log.exception("dispatch of %s failed", signal.id)
                    continue
                report.started += started
                report.coalesced += coalesced
                report.signals += 1
                self._mark_done(outbox.id)
        return report

    async def _dispatch_one(self, client: PrefectClient, signal: SignalRow) -> tuple[int, int]:
        kind, stage = SignalKind(signal.kind), Stage(signal.stage)
        details = dict(signal.evidence.get("details") or {})
        if self._emit:
            emit_event(event=f"laer.signal.{signal.kind}",
                       resource={"prefect.resource.id": f"laer.account.{signal.account_id}",
                                 "prefect.resource.name": signal.account_id},
                       payload={"signal_id": signal.id, "stage": signal.stage,
                                "at": signal.at.isoformat(), "evidence": signal.evidence})
        started = coalesced = 0
        for playbook in self._playbooks:
            if not playbook.wants(kind, stage, details):
                continue
            key = idempotency_key(playbook, signal.id)
            with self._factory() as session:
                if session.scalar(select(PlaybookRunRow.id).where(
                        PlaybookRunRow.idempotency_key == key)) is not None:
                    continue  # dispatched before a crash: the row is the proof
                open_run = session.scalar(select(PlaybookRunRow).where(
                    PlaybookRunRow.account_id == signal.account_id,
                    PlaybookRunRow.playbook == playbook.name,
                    PlaybookRunRow.state.not_in(FINAL_STATES)))
            if open_run is not None:
                self._record_run(signal, playbook, key, None, None, "Coalesced")
                coalesced += 1
                continue
            deployment_id = await self._deployment_id(client, playbook)
            tags = [f"playbook:{playbook.name}", f"stage:{signal.stage}",
                    f"account:{signal.account_id}", f"signal:{signal.kind}"]
            run = await self._retrying(functools.partial(
                client.create_flow_run_from_deployment, deployment_id,
                parameters={"account_id": signal.account_id, "signal_id": signal.id},
                idempotency_key=key, tags=tags))
            self._record_run(signal, playbook, key, str(run.id), run.name,
                             run.state.name if run.state else "Scheduled")
            started += 1
        return started, coalesced

    def _record_run(self, signal: SignalRow, playbook: Playbook, key: str,
                    flow_run_id: str | None, name: str | None, state: str) -> None:
        now = datetime.now(UTC)
        with self._factory() as session:
            session.add(PlaybookRunRow(
                account_id=signal.account_id, playbook=playbook.name, signal_id=signal.id,
                idempotency_key=key, flow_run_id=flow_run_id, flow_run_name=name, state=state,
                created_at=now, updated_at=now))
            session.commit()

    def _mark_done(self, outbox_id: int) -> None:
        with self._factory() as session:
            row = session.get(OutboxRow, outbox_id)
            if row is not None:
                row.status, row.done_at, row.last_error = "done", datetime.now(UTC), None
                session.commit()

    def _note_failure(self, outbox_id: int, exc: BaseException) -> None:
        with self._factory() as session:
            row = session.get(OutboxRow, outbox_id)
            if row is not None:
                row.attempts += 1
                row.last_error = f"{type(exc).__name__}: {exc}"[:2000]
                session.commit()

    async def refresh(self) -> None:
        """Refresh unfinished runs' states with a client of its own."""
        async with self._client_factory() as client:
            await self.refresh_open_runs(client)

    async def refresh_open_runs(self, client: PrefectClient) -> None:
        """Copy Prefect's state of unfinished runs into playbook_runs."""
        with self._factory() as session:
            rows = list(session.scalars(select(PlaybookRunRow).where(
                PlaybookRunRow.state.not_in(FINAL_STATES),
                PlaybookRunRow.flow_run_id.is_not(None))))
            if not rows:
                return
            ids = [UUID(r.flow_run_id) for r in rows if r.flow_run_id]
            runs = await self._retrying(lambda: client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)),
                sort=FlowRunSort.ID_DESC, limit=len(ids)))
            states = {str(r.id): (r.state.name if r.state else None, r.name) for r in runs}
            for row in rows:
                state, name = states.get(row.flow_run_id or "", (None, None))
                if state and state != row.state:
                    row.state, row.updated_at = state, datetime.now(UTC)
                if name:
                    row.flow_run_name = name
            session.commit()

    async def run_forever(self, interval_s: float, stop: asyncio.Event) -> None:
        """Drain the outbox every `interval_s` seconds until `stop` is set."""
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
                await asyncio.wait_for(stop.wait(), timeout=interval_s)
            except TimeoutError:
                pass
