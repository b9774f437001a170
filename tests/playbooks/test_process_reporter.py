"""Steps reported from a child process (as `laer serve` does) reach Prefect as task runs
with their name, tags, state and markdown artifact, every one, once."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from uuid import UUID

from prefect.client.orchestration import get_client

from flows.kit.prefect_report import ProcessReporter, StepReport
from tests.playbooks.test_outages import wait_for


def _report(unique: str, n: int) -> StepReport:
    ended = datetime.now(UTC)
    return StepReport(task_run_id=str(uuid.uuid4()), name=f"onboarding/proc-{unique}/day-{n}",
                      tags=("playbook:onboarding", f"account:proc-{unique}"),
                      started=ended - timedelta(seconds=1), ended=ended, state="Completed",
                      message=f"day-{n}: sent", markdown=f"# day {n} of {unique}",
                      artifact_key="onboarding-report")


def test_a_child_process_reports_every_step(unique: str, prefect_api: str) -> None:
    reports = [_report(unique, n) for n in range(5)]
    reporter = ProcessReporter(niceness=0)
    for r in reports:
        reporter.publish(r)
    reporter.close(timeout=60)
    with get_client(sync_client=True) as client:
        def all_shown() -> bool:
            runs = [client.read_task_run(UUID(r.task_run_id)) for r in reports
                    if _exists(client, r.task_run_id)]
            return len(runs) == len(reports) and all(
                run.state is not None and run.state.is_completed() for run in runs)

        wait_for(all_shown, "every task run to be COMPLETED", timeout=60)
        for r in reports:
            run = client.read_task_run(UUID(r.task_run_id))
            assert run.name == r.name and set(r.tags) <= set(run.tags)
        found = client._client.post("/artifacts/filter", json={
            "artifacts": {"task_run_id": {"any_": [r.task_run_id for r in reports]}},
            "limit": 50}).json()
    assert sorted(a["data"] for a in found) == sorted(str(r.markdown) for r in reports)


def _exists(client: object, run_id: str) -> bool:
    try:
        client.read_task_run(UUID(run_id))  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - not recorded yet
        return False
    return True
