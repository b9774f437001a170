"""Calls to Prefect that outlast a restart or an overload of the server."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from prefect.exceptions import PrefectHTTPStatusError
from tenacity import AsyncRetrying, retry_if_exception, stop_after_delay, wait_random_exponential


def transient(exc: BaseException) -> bool:
    """Prefect down, overloaded (503) or rate limiting (429): worth another try."""
    if isinstance(exc, PrefectHTTPStatusError):
        return exc.response.status_code in {408, 429, 500, 502, 503, 504}
    return isinstance(exc, httpx.TransportError | httpx.TimeoutException | OSError)


async def retrying(fn: Callable[[], Awaitable[Any]], *, for_s: float,
                   before_retry: Callable[[], None]) -> Any:
    """`await fn()`, again after transient failures (jittered backoff) for up to `for_s`."""
    async for attempt in AsyncRetrying(
            retry=retry_if_exception(transient), reraise=True,
            before_sleep=lambda _state: before_retry(),
            wait=wait_random_exponential(multiplier=0.2, max=5),
            stop=stop_after_delay(for_s)):
        with attempt:
            return await fn()
    raise AssertionError("unreachable")  # pragma: no cover
