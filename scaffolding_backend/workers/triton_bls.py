"""Workers that send tasks to co-hosted Triton models over BLS (``async_exec``).

Generation speaks whichever contract the adapter declares (``contracts/``): the
worker sends what the adapter builds, calls decoupled targets with decoupled BLS and
hands every response to the adapter. Only importable inside a Triton Python-backend
stub.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from ..kernel.prompts import PromptFormat
from ..kernel.runtime import TaskDone
from ..kernel.tasks import GenerationTask, RewardTask, Task
from .contracts import TritonContract, TritonRequest, finish
from .contracts.base import TokenCounter

_executor_loops: set[int] = set()


def ensure_bls_executor(threads: int) -> None:
    """``async_exec`` waits in the loop's default executor, min(32, cpus + 4) threads
    unless told otherwise: 6 on a 2-core machine, which silently caps concurrent
    sub-requests. Give the running loop a pool sized from configuration instead."""
    loop = asyncio.get_running_loop()
    if id(loop) not in _executor_loops:
        loop.set_default_executor(ThreadPoolExecutor(max_workers=threads, thread_name_prefix="bls"))
        _executor_loops.add(id(loop))


class SubRequestFailed(RuntimeError):
    """A model called over BLS answered with an error."""


@dataclass
class BLSContext:
    trace: Any | None = None  # the parent request's trace, so sub-requests show up under it
    timeout_us: int = 0


def _outputs(response: Any, model: str) -> dict[str, np.ndarray]:
    if response.has_error():
        raise SubRequestFailed(f"model '{model}': {response.error().message()}")
    return {tensor.name(): tensor.as_numpy() for tensor in response.output_tensors()}


def _next_or_none(responses: Iterator[Any]) -> Any | None:
    return next(responses, None)


async def send(
    model: str, request: TritonRequest, context: BLSContext, *, decoupled: bool
) -> list[dict[str, np.ndarray]]:
    """One BLS request; every response's outputs, in order (a decoupled target may send
    several, and a last one with no outputs that only carries the final flag)."""
    kwargs: dict[str, Any] = {"trace": context.trace} if context.trace is not None else {}
    if request.parameters:
        kwargs["parameters"] = request.parameters
    inference = pb_utils.InferenceRequest(
        model_name=model,
        inputs=[pb_utils.Tensor(name, value) for name, value in request.inputs.items()],
        requested_output_names=list(request.outputs),
        timeout=context.timeout_us,
        **kwargs,
    )
    if not decoupled:
        return [_outputs(await inference.async_exec(), model)]
    responses = await inference.async_exec(decoupled=True)
    collected: list[dict[str, np.ndarray]] = []
    loop = asyncio.get_running_loop()
    while True:
        # the iterator blocks until the next response: wait for it in the executor, not on the loop
        response = await loop.run_in_executor(None, _next_or_none, responses)
        if response is None:
            return collected
        outputs = _outputs(response, model)
        if outputs:
            collected.append(outputs)


class BLSGenerationWorker:
    def __init__(
        self,
        model: str,
        contract: TritonContract,
        context: BLSContext,
        counter: TokenCounter | None,
    ):
        self.model = model
        self.contract = contract
        self.context = context
        self.counter = counter

    async def _run_one(self, task: GenerationTask, on_done: TaskDone) -> None:
        request = self.contract.request(task)
        responses = await send(self.model, request, self.context, decoupled=self.contract.decoupled)
        if not responses:
            raise SubRequestFailed(f"model '{self.model}' sent no response with outputs")
        finish(task, self.contract.reply(task, responses), self.counter)
        on_done(task)

    async def run(self, tasks: list[Task], on_done: TaskDone) -> int:
        # One BLS request per task: the generator's dynamic batcher (or TensorRT-LLM's
        # in-flight batcher) groups them, across requests as well as within one.
        generations = [task for task in tasks if isinstance(task, GenerationTask)]
        await asyncio.gather(*(self._run_one(task, on_done) for task in generations))
        return len(generations)


class BLSRewardWorker:
    """All reward tasks of one yield go as one batched request, with the prompt format
    the generator used, so the reward model scores exactly the text that was written."""

    def __init__(self, model: str, prompt_format: PromptFormat, context: BLSContext):
        self.model = model
        self.prompt_format = prompt_format
        self.context = context

    async def run(self, tasks: list[Task], on_done: TaskDone) -> int:
        rewards = [task for task in tasks if isinstance(task, RewardTask)]
        delimiter = self.prompt_format.step_delimiter
        request = TritonRequest(
            inputs={
                "query": np.array([[task.query] for task in rewards], dtype=np.object_),
                "response": np.array(
                    [[delimiter.join(task.steps)] for task in rewards], dtype=np.object_
                ),
            },
            outputs=("step_scores", "score", "num_steps"),
            parameters={
                "prompt_template": self.prompt_format.template,
                "step_delimiter": delimiter,
            },
        )
        [outputs] = await send(self.model, request, self.context, decoupled=False)
        scores = outputs["score"].reshape(-1)
        num_steps = outputs["num_steps"].reshape(-1)
        for index, task in enumerate(rewards):
            task.score = float(scores[index])
            task.step_scores = (
                outputs["step_scores"][index, : int(num_steps[index])].astype(float).tolist()
            )
            on_done(task)
        return 1
