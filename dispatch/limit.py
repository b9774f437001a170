"""How many run creations the dispatcher keeps in flight: as many as the server takes."""

from __future__ import annotations

import asyncio


class AdaptiveLimit:
    """At most `limit` concurrent calls; halved when the server is overloaded, then regrown.

    A PostgreSQL-backed Prefect server creates runs faster with a few calls in flight; a
    SQLite-backed one answers 503 and slows down, so the limit finds what the server takes.
    """

    def __init__(self, maximum: int) -> None:
        self.maximum = max(1, maximum)
        self.limit = self.maximum
        self._active = 0
        self._successes = 0
        self._cond: asyncio.Condition | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _condition(self) -> asyncio.Condition:
        # One dispatcher may serve several event loops (one asyncio.run per drain).
        loop = asyncio.get_running_loop()
        if self._cond is None or self._loop is not loop:
            self._cond, self._loop, self._active = asyncio.Condition(), loop, 0
        return self._cond

    async def __aenter__(self) -> None:
        cond = self._condition()
        async with cond:
            await cond.wait_for(lambda: self._active < self.limit)
            self._active += 1

    async def __aexit__(self, *_: object) -> None:
        cond = self._condition()
        async with cond:
            self._active -= 1
            cond.notify_all()

    def overloaded(self) -> None:
        """The server refused or timed out: back off multiplicatively."""
        self.limit = max(1, self.limit // 2)
        self._successes = 0

    def succeeded(self) -> None:
        """Grow the limit by one after a run of successes."""
        self._successes += 1
        if self._successes >= 25 and self.limit < self.maximum:
            self.limit += 1
            self._successes = 0
