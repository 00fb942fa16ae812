"""The generator's waits: outages waited out, every wait ended at once by a stop.

An *outage* (the backend or Redis down, timing out, or unable to take work at all) is retried
with jittered backoff, then waited out: the backend's health is polled with backoff until it
answers. Any other error is raised at once. Every wait, and the call itself, ends as soon as
the worker is stopped: then :class:`Stopped` is raised out of it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from prometheus_client import Counter, Gauge
from redis.exceptions import RedisError

from aigq.errors import ServiceError
from aigq.logging import get_logger
from aigq.retry import ExponentialBackoff
from generators.backends import Backend, BackendUnavailable
from generators.settings import GeneratorSettings

log = get_logger(__name__)
T = TypeVar("T")
# What a wait outlasts: the backend or Redis down, timing out, or unable to take work at all.
OUTAGES = (BackendUnavailable, ServiceError, RedisError, OSError)


class Stopped(Exception):
    """Raised out of a batch's waits when the worker is stopped: the batch ends there,
    uncommitted."""


class Waits:
    """The waits of one worker (see the module doc); ``waiting`` counts the batches waiting
    for an outage to end."""

    def __init__(
        self,
        settings: GeneratorSettings,
        backend: Backend,
        stopping: asyncio.Event,
        retries: Counter,
        paused: Gauge,
    ) -> None:
        self.settings, self.backend, self.stopping = settings, backend, stopping
        self._retries, self._paused = retries, paused
        self._health = ExponentialBackoff(settings.backoff_s, settings.backoff_max_s)
        self.waiting = 0

    async def until_up(self, call: Callable[[], Awaitable[T]], what: str) -> T:
        """``call()`` with the configured retries; past them, wait until it works again.

        Only outages are waited out; any other error is raised at once. While it waits, the
        batch counts in :attr:`paused`. Every wait, and the call itself, ends as soon as
        :meth:`stop` is called: then it raises ``Stopped``.
        """
        retry = self.settings.retry(OUTAGES, sleep=self.sleep)
        outage = 0
        waiting = False
        try:
            while True:
                try:
                    result = await retry.call(
                        lambda: self.until_stopped(call()),
                        on_retry=lambda n, e: self._retries.inc(),
                    )
                except OUTAGES as exc:
                    outage += 1
                    if not waiting:
                        waiting = True
                        self.waiting += 1
                        self._paused.set(1)
                        log.warning("pausing: %s is down", what, error=repr(exc))
                    await self.sleep(self._health(min(outage, 10)))
                    if what == "backend":
                        while not await self.healthy():
                            outage += 1
                            await self.sleep(self._health(min(outage, 10)))
                    continue
                if waiting:
                    log.info("resuming: %s is back", what)
                return result
        finally:
            if waiting:
                self.waiting -= 1
                if not self.waiting:
                    self._paused.set(0)

    async def healthy(self) -> bool:
        try:
            return await self.until_stopped(self.backend.healthy())
        except OUTAGES:  # a health check that fails says the same as one that answers no
            return False

    async def sleep(self, seconds: float) -> None:
        await self.until_stopped(asyncio.sleep(seconds))

    async def until_stopped(self, awaitable: Awaitable[T]) -> T:
        """``awaitable``'s result, or ``Stopped`` as soon as :meth:`stop` is called (the
        awaitable is cancelled then)."""
        work = asyncio.ensure_future(awaitable)
        stop = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait((work, stop), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not work.done():
                work.cancel()
        if work.done() and not work.cancelled():
            return work.result()
        # Let the cancellation run its cleanup (a connection closed), briefly.
        await asyncio.wait((work,), timeout=1.0)
        if work.done() and not work.cancelled():
            work.exception()  # whatever it ended with, it is not this batch's outcome now
        raise Stopped
