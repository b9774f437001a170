"""The playbook-run states: which are final (the account and playbook no longer open)."""

from __future__ import annotations

from collections.abc import Iterable

from prefect.client.schemas.objects import TERMINAL_STATES, StateType


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
