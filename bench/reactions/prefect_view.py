"""What the Prefect API shows of the run: its steps as task runs (or, in the old shape, flow
runs) named `playbook/ACCOUNT/step`, counted and checked for doubles."""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx


def _filter(kind: str, like: str, completed: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"name": {"like_": like}}
    if completed:
        body["state"] = {"type": {"any_": ["COMPLETED"]}}
    return {kind: body}


def shown(api_url: str, like: str, source: str) -> int:
    """Completed runs whose name contains `like`: task runs for executor steps, flow runs for
    the old one-flow-run-per-step shape."""
    kind = "task_runs" if source == "playbook_steps" else "flow_runs"
    r = httpx.post(f"{api_url}/{kind}/count", json=_filter(kind, like, True), timeout=30)
    r.raise_for_status()
    return int(r.json())


def names(api_url: str, like: str, source: str) -> Counter[str]:
    """How many runs of each name whose name contains `like` Prefect shows."""
    kind = "task_runs" if source == "playbook_steps" else "flow_runs"
    found: Counter[str] = Counter()
    offset = 0
    while True:
        r = httpx.post(f"{api_url}/{kind}/filter", json={
            **_filter(kind, like, False), "limit": 200, "offset": offset}, timeout=60)
        r.raise_for_status()
        page = r.json()
        found.update(run["name"] for run in page)
        offset += len(page)
        if len(page) < 200:
            break
    return found


def ops_deployments(api_url: str) -> int:
    """Deployments tagged `ops` (those `laer serve` registers when it starts serving)."""
    r = httpx.post(f"{api_url}/deployments/count",
                   json={"deployments": {"tags": {"all_": ["ops"]}}}, timeout=30)
    r.raise_for_status()
    return int(r.json())
