"""The run states the dispatcher treats as closed or in flight, derived from Prefect's types."""

from __future__ import annotations

from prefect.client.schemas.objects import StateType
from prefect.states import AwaitingRetry, Late, Retrying

from dispatch.run_states import FINAL_STATES, IN_FLIGHT


def test_closed_and_in_flight_states_are_the_ones_stored_since_the_first_slice() -> None:
    assert FINAL_STATES == {"Completed", "Failed", "Cancelled", "Crashed", "Coalesced",
                            "Skipped"}
    assert IN_FLIGHT == {"Scheduled", "Pending", "Running", "Late", "AwaitingRetry",
                         "Retrying"}
    assert not FINAL_STATES & IN_FLIGHT


def test_the_special_in_flight_states_are_prefects_names_of_waiting_or_running_types() -> None:
    waiting_or_running = {StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING}
    for make in (Late, AwaitingRetry, Retrying):
        state = make()
        assert state.name in IN_FLIGHT and state.type in waiting_or_running
