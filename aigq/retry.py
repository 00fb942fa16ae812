"""Retries with pluggable backoff: one small object, the way redis-py's asyncio ``Retry`` is.

A :class:`Retry` runs an async call up to ``1 + retries`` times, sleeping ``backoff(attempt)``
seconds between tries, and only for the exception types it is told are transient. Anything
else, and the last failure, propagates unchanged, so the caller decides what "gave up" means
(the generator worker, for one, keeps its batch and waits for the backend to come back).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

T = TypeVar("T")


class Backoff(Protocol):
    def __call__(self, attempt: int) -> float:
        """Seconds to wait before try ``attempt + 1`` (``attempt`` counts from 1)."""
        ...


@dataclass(frozen=True, slots=True)
class ExponentialBackoff:
    """``base_s * 2 ** (attempt - 1)``, capped, with "full jitter" (uniform in [0, that])
    unless ``jitter`` is off: many workers retrying one backend do not retry in step."""

    base_s: float = 0.2
    cap_s: float = 30.0
    jitter: bool = True

    def __post_init__(self) -> None:
        if self.base_s <= 0 or self.cap_s < self.base_s:
            raise ValueError("need 0 < base_s <= cap_s")

    def __call__(self, attempt: int) -> float:
        delay = min(self.cap_s, self.base_s * 2.0 ** max(attempt - 1, 0))
        return random.uniform(0.0, delay) if self.jitter else delay


@dataclass(frozen=True, slots=True)
class ConstantBackoff:
    delay_s: float = 0.1

    def __call__(self, attempt: int) -> float:
        return self.delay_s


class Retry:
    """Run ``call()`` until it succeeds, ``retries`` more times at most, on ``retry_on`` only."""

    def __init__(
        self,
        backoff: Backoff,
        retries: int,
        retry_on: tuple[type[BaseException], ...],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.backoff, self.retries, self.retry_on, self._sleep = backoff, retries, retry_on, sleep

    async def call(
        self,
        call: Callable[[], Awaitable[T]],
        on_retry: Callable[[int, BaseException], None] | None = None,
    ) -> T:
        attempt = 0
        while True:
            attempt += 1
            try:
                return await call()
            except self.retry_on as exc:
                if attempt > self.retries:
                    raise
                if on_retry is not None:
                    on_retry(attempt, exc)
                await self._sleep(self.backoff(attempt))
