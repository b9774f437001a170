"""A run's calls to the Prefect API: schedule a later step as a flow run, tag the current run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.exceptions import ObjectNotFound
from prefect.states import Scheduled

from flows.kit.records import register_follow_up
from flows.kit.registry import DEPLOYMENT_NAME
from flows.kit.runtime import current_flow_run_id


def run_name_for(playbook: str, account_id: str, step: str) -> str:
    """`onboarding/ACCOUNT/day-3`."""
    return f"{playbook}/{account_id}/{step}"


@task(retries=5, retry_delay_seconds=[1, 2, 5, 10, 30], cache_policy=NO_CACHE,
      task_run_name="schedule-{step}")
def schedule_step(playbook: str, account_id: str, signal_id: str, step: str, delay_s: float,
                  key: str, tags: list[str]) -> str:
    """Schedule a later step as a future flow run of this playbook's deployment."""
    deployment = f"{playbook}/{DEPLOYMENT_NAME}"
    when = datetime.now(UTC) + timedelta(seconds=max(0.0, delay_s))
    with get_client(sync_client=True) as client:
        try:
            dep = client.read_deployment_by_name(deployment)
        except ObjectNotFound:
            return f"not scheduled: no deployment {deployment}"
        run = client.create_flow_run_from_deployment(
            dep.id, parameters={"account_id": account_id, "signal_id": signal_id, "step": step},
            state=Scheduled(scheduled_time=when), idempotency_key=key,
            name=run_name_for(playbook, account_id, step), tags=tags)
    state = (run.state.name if run.state else None) or "Scheduled"
    if run.state is None or run.state.type in (StateType.SCHEDULED, StateType.PENDING,
                                               StateType.RUNNING):
        register_follow_up(account_id=account_id, playbook=playbook, signal_id=signal_id,
                           key=key, flow_run_id=str(run.id), name=run.name, state=state)
    return f"{step} at {when:%Y-%m-%d %H:%M:%S} UTC ({run.name})"


def tag_current_run(tags: list[str]) -> None:
    """Add account, stage and signal tags to the running flow run (shown in the Prefect UI)."""
    run_id = current_flow_run_id()
    if run_id is None:
        return
    try:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(UUID(run_id))
            merged = sorted(set(run.tags) | set(tags))
            if merged != sorted(run.tags):
                client.update_flow_run(UUID(run_id), tags=merged)
    except Exception:  # tags are a convenience: never fail a playbook over them
        return
