"""What a worker needs to know about the request it works for."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RequestContext:
    trace: Any | None = None  # the parent request's Triton trace, so sub-requests show up under it
    deadline: float | None = None  # time.monotonic() by which the request must be done

    def remaining_s(self) -> float | None:
        """Seconds left before the deadline (never negative), or None without one."""
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    @classmethod
    def within(cls, seconds: float, trace: Any | None = None) -> RequestContext:
        return cls(trace=trace, deadline=time.monotonic() + seconds)
