"""The playbook-run states the dispatcher stores, and copying Prefect's states into them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import TERMINAL_STATES, StateType
from prefect.client.schemas.sorting import FlowRunSort
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from persistence.tables import PlaybookRunRow


def _named(types: Iterable[StateType]) -> frozenset[str]:
    # A plain state is named after its type: StateType.COMPLETED is "Completed".
    return frozenset(t.value.title() for t in types)


# Beside Prefect's terminal states, two of laer's own: "Coalesced" (the signal joined a run
# already open) and "Skipped" (nothing writes it now; a row that has it stays closed).
FINAL_STATES = _named(TERMINAL_STATES) | {"Coalesced", "Skipped"}

# Waiting or running: Prefect's scheduled, pending and running types, with the special
# states of those types that runs pass through (Late, AwaitingRetry, Retrying).
IN_FLIGHT = _named((StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING)) | {
    "Late", "AwaitingRetry", "Retrying"}


async def refresh_open_runs(factory: sessionmaker[Session], client: PrefectClient,
                            retrying: Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]]
                            ) -> None:
    """Copy Prefect's state (and name) of every unfinished run into playbook_runs."""
    with factory() as session:
        rows = list(session.scalars(select(PlaybookRunRow).where(
            PlaybookRunRow.state.not_in(FINAL_STATES),
            PlaybookRunRow.flow_run_id.is_not(None))))
        if not rows:
            return
        ids = [UUID(r.flow_run_id) for r in rows if r.flow_run_id]
        runs = await retrying(lambda: client.read_flow_runs(
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
