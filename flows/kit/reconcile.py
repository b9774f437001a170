"""The playbook reconciler: a step whose run crashed or failed is run again, and a message
waiting for a retry gets its retry run, so no crash ends a playbook or strands a message.

It runs as an ops flow on a short cron. A step's run that ended `Crashed` or `Failed` before
the step completed (its `playbook_runs` row never reached `Completed`) is created again from
the same deployment with the same parameters and the idempotency key `<its key>:resume`, so
two reconcilers, or one run twice, create one run. A run left `Running` or `Pending` longer
than `LAER_PLAYBOOK_STALE_RUN_S` (its process died with its worker) is marked `Crashed` first.
Each step is resumed at most `LAER_PLAYBOOK_RESUME_LIMIT` times.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from uuid import UUID

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterDeploymentId,
    FlowRunFilterExpectedStartTime,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.exceptions import ObjectNotFound
from prefect.states import Crashed, Scheduled
from sqlalchemy import select

from flows.kit.records import register_follow_up
from flows.kit.registry import discover
from flows.kit.retries import RetryTarget, due_targets
from flows.kit.runtime import runtime
from flows.kit.scheduling import run_name_for, schedule_step
from flows.kit.settings import playbook_settings
from persistence.tables import PlaybookRunRow

RESUME = ":resume"
LOOKBACK = timedelta(days=14)  # older crashes are for a person to look at
BATCH = 200
PAGES = 10


def _deployments(client: SyncPrefectClient) -> dict[UUID, str]:
    found: dict[UUID, str] = {}
    for d in discover():
        try:
            found[client.read_deployment_by_name(d.playbook.deployment).id] = d.playbook.name
        except ObjectNotFound:  # a playbook nobody serves yet
            continue
    return found


def _runs(client: SyncPrefectClient, deployments: list[UUID], types: list[StateType],
          since: datetime) -> list[FlowRun]:
    """Runs in `types` since `since`, newest first, that this installation's database knows."""
    found: list[FlowRun] = []
    for page in range(PAGES):
        runs = client.read_flow_runs(
            limit=BATCH, offset=page * BATCH, sort=FlowRunSort.EXPECTED_START_TIME_DESC,
            flow_run_filter=FlowRunFilter(
                deployment_id=FlowRunFilterDeploymentId(any_=deployments),
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=types)),
                expected_start_time=FlowRunFilterExpectedStartTime(after_=since)))
        found += runs
        if len(runs) < BATCH:
            break
    # Another installation may share the Prefect server: only runs in playbook_runs are ours.
    with runtime().sessions() as session:
        ours = set(session.scalars(select(PlaybookRunRow.flow_run_id).where(
            PlaybookRunRow.flow_run_id.in_([str(r.id) for r in found]))))
    return [r for r in found if str(r.id) in ours]


def _mark_stale(client: SyncPrefectClient, deployments: list[UUID], now: datetime) -> int:
    stale = now - timedelta(seconds=playbook_settings().stale_run_s)
    marked = 0
    for run in _runs(client, deployments, [StateType.RUNNING, StateType.PENDING],
                     now - LOOKBACK):
        if run.state is not None and run.state.timestamp is not None \
                and run.state.timestamp < stale:
            client.set_flow_run_state(run.id, Crashed(
                message=f"no end after {playbook_settings().stale_run_s:.0f}s: its process "
                        "is gone"), force=True)
            marked += 1
    return marked


def _resume(client: SyncPrefectClient, run: FlowRun, playbook: str, now: datetime) -> str:
    key = run.idempotency_key
    if not key or run.deployment_id is None:
        return "untracked"
    sessions = runtime().sessions
    with sessions() as session:
        row = session.scalar(select(PlaybookRunRow).where(
            PlaybookRunRow.flow_run_id == str(run.id)))
        if row is None or row.state == "Completed":
            return "completed"  # the step was done; its process ended badly after
        if session.scalar(select(PlaybookRunRow.id).where(
                PlaybookRunRow.idempotency_key == key + RESUME)) is not None:
            return "resumed earlier"
        if run.state is not None and run.state.name:
            row.state, row.updated_at = run.state.name, now  # final: no longer open
            session.commit()
    if key.count(RESUME) >= playbook_settings().resume_limit:
        return "given up"
    params = dict(run.parameters)
    account_id, signal_id = str(params.get("account_id")), str(params.get("signal_id"))
    step = str(params.get("step", "start"))
    new = client.create_flow_run_from_deployment(
        run.deployment_id, parameters=params, state=Scheduled(scheduled_time=now),
        idempotency_key=key + RESUME, name=run.name or run_name_for(playbook, account_id, step),
        tags=list(run.tags))
    register_follow_up(account_id=account_id, playbook=playbook, signal_id=signal_id,
                       key=key + RESUME, flow_run_id=str(new.id), name=new.name,
                       state=(new.state.name if new.state else None) or "Scheduled")
    return "resumed"


@task(retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def resume_broken_steps() -> dict[str, int]:
    """Run again every playbook step whose run crashed or failed before the step completed."""
    now = datetime.now(UTC)
    counts: Counter[str] = Counter()
    with get_client(sync_client=True) as client:
        deployments = _deployments(client)
        if not deployments:
            return {}
        counts["marked crashed"] = _mark_stale(client, list(deployments), now)
        for run in _runs(client, list(deployments), [StateType.CRASHED, StateType.FAILED],
                         now - LOOKBACK):
            assert run.deployment_id is not None
            counts[_resume(client, run, deployments[run.deployment_id], now)] += 1
    return dict(counts)


def ensure_retry_runs(targets: list[RetryTarget]) -> list[str]:
    """Create the retry run of each target unless it is recorded already; their names."""
    made = []
    with runtime().sessions() as session:
        known = set(session.scalars(select(PlaybookRunRow.idempotency_key).where(
            PlaybookRunRow.idempotency_key.in_([t.key for t in targets]))))
    for t in targets:
        if t.key in known:
            continue
        wait = (t.at - datetime.now(UTC)).total_seconds()
        made.append(schedule_step.fn(t.playbook, t.account_id, t.signal_id, t.step, wait, t.key,
                                     [f"playbook:{t.playbook}", f"account:{t.account_id}",
                                      f"step:{t.step}", "retry"]))
    return made


@task(retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def schedule_missing_retries() -> int:
    """Give every message that is due for another try a retry run, if it has none."""
    return len(ensure_retry_runs(due_targets(runtime().sessions, datetime.now(UTC))))


@flow(name="playbook-reconciler", flow_run_name="playbook-reconciler")
def reconcile_playbooks() -> dict[str, int]:
    """Resume crashed or failed playbook steps and schedule retries that nobody scheduled."""
    counts = {**resume_broken_steps(), "retry runs scheduled": schedule_missing_retries()}
    lines = "\n".join(f"- {what}: {n}" for what, n in sorted(counts.items()) if n)
    create_markdown_artifact(key="playbook-reconciler",
                             markdown="# Playbook reconciler\n\n" + (lines or "- nothing to do"),
                             description="Steps resumed and retries scheduled")
    return counts
