"""A worker that runs tasks in this process with a plain function: scripted
controllers in unit tests become checkable by hand."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ..kernel.runtime import TaskDone
from ..kernel.tasks import FinishReason, GenerationTask, Task


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
            if task.stop_requested:
                continue  # stopped before it started: never generated
            self.fill(task)
            if isinstance(task, GenerationTask) and task.on_chunk is not None:
                self._stream(task)
            self.calls.append(task)
            on_done(task)
        return 1 if self.batched else len(tasks)

    @staticmethod
    def _stream(task: GenerationTask) -> None:
        """Hand the filled log-probs to ``on_chunk`` one token at a time, as a streaming
        engine would; a stop keeps only the tokens written so far."""
        log_probs = task.token_log_probs or []
        for written in range(1, len(log_probs) + 1):
            if task.on_chunk is not None and task.on_chunk(
                task, "", log_probs[written - 1 : written]
            ):
                task.request_stop()
                task.finish_reason = FinishReason.CANCELLED
                task.num_output_tokens = written
                task.token_log_probs = log_probs[:written]
                return
