"""The playbook reconciler: every message waiting for another try has a step to try it.

A step whose executor died needs nothing from here: its lease runs out and another
executor takes it over (see steps.py). What a crash can strand is a message left
`retrying` with no retry step queued (the step ended between recording the failure and
queueing its retry); this flow queues one, under the same key the step would have used.
It runs as an ops flow on a short cron; two at once queue each retry once.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from sqlalchemy import func, select

from flows.kit.retries import RetryTarget, due_targets
from flows.kit.runtime import runtime
from flows.kit.scheduling import queue_step
from persistence.tables import PlaybookStepRow


def ensure_retry_runs(targets: list[RetryTarget]) -> list[str]:
    """Queue the retry step of each target unless it is queued already; what was queued."""
    made = []
    for t in targets:
        wait = (t.at - datetime.now(UTC)).total_seconds()
        added, line = queue_step(t.playbook, t.account_id, t.signal_id, t.step, wait, t.key,
                                 [f"playbook:{t.playbook}", f"account:{t.account_id}",
                                  f"step:{t.step}", "retry"])
        if added:
            made.append(line)
    return made


@task(retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def schedule_missing_retries() -> int:
    """Give every message that is due for another try a retry step, if it has none."""
    return len(ensure_retry_runs(due_targets(runtime().sessions, datetime.now(UTC))))


@task(cache_policy=NO_CACHE)
def count_steps() -> dict[str, int]:
    """Steps by status, for the reconciler's report."""
    with runtime().sessions() as session:
        return {str(s): int(n) for s, n in session.execute(
            select(PlaybookStepRow.status, func.count()).group_by(PlaybookStepRow.status))}


@flow(name="playbook-reconciler", flow_run_name="playbook-reconciler")
def reconcile_playbooks() -> dict[str, int]:
    """Queue retries that nobody queued, and report the step queue by status."""
    counts = Counter({"retry steps queued": schedule_missing_retries()})
    counts.update({f"steps {k}": v for k, v in count_steps().items()})
    lines = "\n".join(f"- {what}: {n}" for what, n in sorted(counts.items()) if n)
    create_markdown_artifact(key="playbook-reconciler",
                             markdown="# Playbook reconciler\n\n" + (lines or "- nothing to do"),
                             description="Retries queued and steps by status")
    return dict(counts)
