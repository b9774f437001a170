"""The account journey in Prefect's event feed: one event per dispatched signal."""

from __future__ import annotations

import logging
from collections.abc import Callable

from prefect.events import Event
from prefect.events.clients import EventsClient

from persistence.steps import task_run_id
from persistence.tables import PlaybookRunRow, SignalRow

log = logging.getLogger(__name__)

Dispatched = list[tuple[SignalRow, list[PlaybookRunRow]]]


def journey_events(dispatched: Dispatched) -> list[Event]:
    """An event per signal on its account's resource, linked to the runs it started."""
    return [Event(
        event=f"laer.signal.{signal.kind}",
        resource={"prefect.resource.id": f"laer.account.{signal.account_id}",
                  "prefect.resource.name": signal.account_id,
                  "laer.stage": signal.stage},
        related=[{"prefect.resource.id": f"prefect.task-run.{task_run_id(r.idempotency_key, 1)}",
                  "prefect.resource.role": "task-run",
                  "prefect.resource.name": r.flow_run_name or r.playbook}
                 for r in runs if r.signal_id == signal.id and r.state != "Coalesced"],
        payload={"signal_id": signal.id, "stage": signal.stage,
                 "at": signal.at.isoformat(), "evidence": signal.evidence,
                 "playbooks": sorted({r.playbook for r in runs
                                      if r.signal_id == signal.id})},
    ) for signal, runs in dispatched]


async def emit_journey(client_factory: Callable[[], EventsClient],
                       dispatched: Dispatched) -> None:
    """Send the journey events of a committed batch; if Prefect drops now, log and lose them.

    They are the UI's journey feed, not a record.
    """
    if not dispatched:
        return
    events = journey_events(dispatched)
    try:
        # A client per batch, bound to this process's API URL (Prefect's global
        # events worker keeps the first URL it saw).
        async with client_factory() as client:
            for event in events:
                await client.emit(event)
    except Exception as exc:
        log.warning("%d journey events not sent to Prefect: %s", len(events), exc)
