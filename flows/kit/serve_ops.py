"""Serving the ops deployments through a busy Prefect API: a SQLite-backed server under a
burst answers 503 while `prefect.serve` registers them, and that must not stop the executor.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

import httpx
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_delay,
    wait_exponential,
)

TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def is_transient(exc: BaseException) -> bool:
    """A failure another try may not meet: the API busy, restarting or not reachable yet."""
    seen: BaseException | None = exc
    while seen is not None:  # DeploymentApplyError wraps the HTTP error as its cause
        if isinstance(seen, httpx.HTTPStatusError):
            return seen.response.status_code in TRANSIENT_STATUS
        if isinstance(seen, httpx.TransportError | ConnectionError | TimeoutError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _say_retrying(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    wait = state.next_action.sleep if state.next_action else 0.0
    print(f"Prefect API not ready to register the ops flows ({type(exc).__name__}); "
          f"trying again in {wait:.1f}s", file=sys.stderr, flush=True)


def serve_ops(deployments: Sequence[Any], *, retry_s: float = 1.0, give_up_s: float = 600.0,
              serve: Callable[..., None] | None = None) -> None:
    """Register and serve `deployments`, trying again on transient API errors for `give_up_s`."""
    if serve is None:
        from prefect import serve as prefect_serve

        serve = prefect_serve
    retrying = Retrying(retry=retry_if_exception(is_transient),
                        wait=wait_exponential(multiplier=retry_s, max=30.0),
                        stop=stop_after_delay(give_up_s), before_sleep=_say_retrying,
                        reraise=True)
    for attempt in retrying:
        with attempt:
            serve(*deployments, print_starting_message=False)
