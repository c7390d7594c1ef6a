"""A worker that runs tasks in this process with a plain function: scripted
controllers in unit tests become checkable by hand."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ..kernel.runtime import TaskDone
from ..kernel.tasks import Task


class FunctionWorker:
    def __init__(self, fill: Callable[[Task], None], *, batched: bool = False):
        """``fill(task)`` sets the task's results. ``batched`` counts one sub-request per
        call (a reward batch)."""
        self.fill = fill
        self.batched = batched
        self.calls: list[Task] = []

    async def run(self, tasks: list[Task], on_done: TaskDone) -> int:
        for task in tasks:
            await asyncio.sleep(0)  # a real worker yields to the loop; cancellation lands here
            self.fill(task)
            self.calls.append(task)
            on_done(task)
        return 1 if self.batched else len(tasks)
