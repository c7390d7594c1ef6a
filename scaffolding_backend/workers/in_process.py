"""Workers that run tasks in this process: for unit tests and local experiments.

``EngineWorker`` sends each batch of generation tasks through one batched
engine call; ``FunctionWorker`` answers each task with a plain function, which
makes scripted controllers checkable by hand.
"""

from __future__ import annotations

import asyncio
from typing import Callable

from ..core.runtime import TaskDone
from ..core.tasks import GenerationTask, Task
from ..engines.causal_lm import CausalLMEngine, GenerationRequest


class FunctionWorker:
    def __init__(self, fill: Callable[[Task], None], *, batched: bool = False):
        """``fill(task)`` sets the task's results. ``batched`` counts one sub-request per call (a reward batch)."""
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


def request_for(task: GenerationTask) -> GenerationRequest:
    return GenerationRequest(
        prompt=task.prompt,
        max_tokens=task.max_tokens,
        temperature=task.temperature,
        top_p=task.top_p,
        top_k=task.top_k,
        seed=task.seed,
        stop_words=task.stop_words,
    )


class EngineWorker:
    def __init__(self, engine: CausalLMEngine):
        self.engine = engine

    async def run(self, tasks: list[Task], on_done: TaskDone) -> int:
        generations = [task for task in tasks if isinstance(task, GenerationTask)]
        if len(generations) != len(tasks):
            raise TypeError("EngineWorker only runs GenerationTasks")
        results = await asyncio.to_thread(self.engine.generate, [request_for(task) for task in generations])
        for task, result in zip(generations, results):
            task.output_text = result.text
            task.num_prompt_tokens = result.num_prompt_tokens
            task.num_output_tokens = result.num_output_tokens
            task.cum_log_prob = result.cum_log_prob
            task.token_log_probs = result.token_log_probs if task.return_log_probs else None
            task.finish_reason = result.finish_reason
            on_done(task)
        return 1

