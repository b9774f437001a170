"""The anchor in the same run: N trivial flow runs created with the Prefect client on a
deployment that a `flow.serve` process executes, each in its own subprocess as Prefect does."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import httpx

from laer.local.prefect_server import prefect_env
from laer.local.processes import stop_group

FLOW = Path(__file__).with_name("noop_flow.py")
DEPLOYMENT = "bench-reactions-noop/baseline"


def _completed(api_url: str, deployment_id: str) -> int:
    r = httpx.post(f"{api_url}/flow_runs/count", json={"flow_runs": {
        "deployment_id": {"any_": [deployment_id]},
        "state": {"type": {"any_": ["COMPLETED"]}}}}, timeout=30)
    r.raise_for_status()
    return int(r.json())


def _deployment_id(api_url: str, process: subprocess.Popen[bytes], timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the baseline's `serve` process exited")
        r = httpx.get(f"{api_url}/deployments/name/{DEPLOYMENT}", timeout=10)
        if r.status_code == 200:
            return str(r.json()["id"])
        time.sleep(0.5)
    raise RuntimeError("the baseline deployment was not registered")


async def _create(api_url: str, deployment_id: str, n: int) -> None:
    async with httpx.AsyncClient(base_url=api_url, timeout=60) as http:
        for i in range(n):
            deadline = time.monotonic() + 120
            while True:  # a busy server answers 503; the idempotency key makes a retry safe
                try:
                    r = await http.post(f"/deployments/{deployment_id}/create_flow_run",
                                        json={"idempotency_key": f"baseline:{i}"})
                    if r.status_code != 503:
                        r.raise_for_status()
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("the baseline's runs could not be created")
                await asyncio.sleep(0.5)


def measure_baseline(api_url: str, home: Path, runs: int, limit: int, bound_s: float
                     ) -> dict[str, float | int]:
    """Runs completed per second: from the first creation to the last completion."""
    home.mkdir(parents=True, exist_ok=True)
    env = prefect_env(home, api_url=api_url)
    env["PREFECT_RUNNER_POLL_FREQUENCY"] = "2"  # as `laer up` gives `laer serve`
    with (home / "baseline-serve.log").open("ab") as log:
        process = subprocess.Popen([sys.executable, str(FLOW), "baseline", str(limit)],
                                   env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deployment_id = _deployment_id(api_url, process, 120)
        started = time.monotonic()
        asyncio.run(_create(api_url, deployment_id, runs))
        deadline = started + bound_s
        done = 0
        while time.monotonic() < deadline:
            try:
                done = _completed(api_url, deployment_id)
            except httpx.HTTPError:  # the SQLite-backed server is busy running them (503)
                continue
            if done >= runs:
                break
            time.sleep(0.5)
        seconds = time.monotonic() - started
        return {"runs": runs, "completed": done, "seconds": round(seconds, 2),
                "runs_per_s": round(done / seconds, 3)}
    finally:
        stop_group(process, 20)
