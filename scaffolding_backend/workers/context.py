"""What a worker needs to know about the request it works for."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class SubRequestSlots:
    """At most ``limit`` sub-requests of a model instance in flight at once; the rest wait
    (each waiting BLS call would otherwise hold a thread of the executor)."""

    def __init__(self, limit: int, on_change: Callable[[int], None] | None = None):
        self.limit = limit
        self.in_flight = 0
        self._semaphore: asyncio.Semaphore | None = None
        self._on_change = on_change

    def hold(self) -> SubRequestSlots:
        """``async with slots.hold():`` one slot. A plain async context manager: the
        generator-based kind cost 2% of the scaffolding stub's event loop, per sub-request."""
        return self

    async def __aenter__(self) -> None:
        if self._semaphore is None:  # created on the loop that serves the requests
            self._semaphore = asyncio.Semaphore(self.limit)
        await self._semaphore.acquire()
        try:
            self._changed(+1)
        except BaseException:
            self._semaphore.release()
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._semaphore is not None
        try:
            self._changed(-1)
        finally:
            self._semaphore.release()

    def _changed(self, delta: int) -> None:
        self.in_flight += delta
        if self._on_change is not None:
            self._on_change(self.in_flight)


@dataclass(frozen=True)
class RequestContext:
    trace: Any | None = None  # the parent request's Triton trace, so sub-requests show up under it
    deadline: float | None = None  # time.monotonic() by which the request must be done
    slots: SubRequestSlots | None = None  # the model instance's sub-request limit

    def remaining_s(self) -> float | None:
        """Seconds left before the deadline (never negative), or None without one."""
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def slot(self) -> contextlib.AbstractAsyncContextManager[Any]:
        """``async with context.slot():`` one sub-request slot (none to hold without a limit)."""
        return contextlib.nullcontext() if self.slots is None else self.slots.hold()

    @classmethod
    def within(
        cls, seconds: float, trace: Any | None = None, slots: SubRequestSlots | None = None
    ) -> RequestContext:
        return cls(trace=trace, deadline=time.monotonic() + seconds, slots=slots)
