"""A concurrency limiter with a bounded waiting queue, for the event loop.

At most ``max_concurrency`` requests generate at once; up to ``max_queue`` more wait (first come, first
served) for at most ``queue_timeout`` seconds. A request arriving when the queue is full gets a 429; one that
waited too long gets a 503. Both are OpenAI error bodies with a ``Retry-After`` header.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from qvl_agent.server.errors import APIError


class Limiter:
    """Slots for running requests plus a bounded FIFO of waiters."""

    def __init__(self, max_concurrency: int = 1, max_queue: int = 16, queue_timeout: float | None = 300.0):
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if max_queue < 0:
            raise ValueError(f"max_queue must be >= 0, got {max_queue}")
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.queue_timeout = queue_timeout
        self.active = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def acquire(self) -> None:
        """Take a slot, waiting in the queue if needed; raises :class:`APIError` 429/503 past capacity."""
        if self.active < self.max_concurrency and not self._waiters:
            self.active += 1
            return
        if len(self._waiters) >= self.max_queue:
            raise APIError(
                429,
                f"the server is busy: {self.active} request(s) running and {len(self._waiters)} waiting "
                f"(queue limit {self.max_queue}); retry later",
                code="server_busy",
                headers={"Retry-After": "1"},
            )
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), self.queue_timeout)
        except asyncio.TimeoutError:
            if waiter.done() and not waiter.cancelled():  # got the slot just as time ran out
                self.release()
            else:
                waiter.cancel()
            raise APIError(
                503,
                f"timed out after {self.queue_timeout:g}s waiting for a free generation slot; retry later",
                code="queue_timeout",
                headers={"Retry-After": "5"},
            ) from None
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()
            else:
                waiter.cancel()
            raise
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def release(self) -> None:
        """Give the slot to the next waiter, or free it."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes on; ``active`` stays the same
                return
        self.active -= 1

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        await self.acquire()
        try:
            yield
        finally:
            self.release()
