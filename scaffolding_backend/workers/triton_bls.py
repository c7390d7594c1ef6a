"""Workers that send tasks to co-hosted Triton models with BLS (``async_exec``).

Generation speaks the TensorRT-LLM ``ensemble`` / ``tensorrt_llm_bls`` input
contract, so pointing ``generator_model`` at a TensorRT-LLM deployment is a
configuration change. Only importable inside a Triton Python-backend stub.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import triton_python_backend_utils as pb_utils

from ..core.runtime import TaskDone
from ..core.tasks import GenerationTask, RewardTask, Task

_executor_loops: set[int] = set()


def ensure_bls_executor(threads: int) -> None:
    """``async_exec`` waits in the loop's default executor, min(32, cpus + 4) threads
    unless told otherwise: 6 on a 2-core machine, which silently caps concurrent
    sub-requests. Give the running loop a pool sized from configuration instead."""
    loop = asyncio.get_running_loop()
    if id(loop) not in _executor_loops:
        loop.set_default_executor(ThreadPoolExecutor(max_workers=threads, thread_name_prefix="bls"))
        _executor_loops.add(id(loop))


def _tensor(name: str, value, dtype) -> "pb_utils.Tensor":
    return pb_utils.Tensor(name, np.array([[value]], dtype=dtype))


def _output(response, name: str):
    tensor = pb_utils.get_output_tensor_by_name(response, name)
    return None if tensor is None else tensor.as_numpy()


def _text(array) -> str:
    value = array.reshape(-1)[0]
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


class BLSError(RuntimeError):
    pass


@dataclass
class GenerationModel:
    """Where generation tasks go and how that model names its inputs."""

    name: str = "generator"
    seed_input: str = "seed"  # older TensorRT-LLM releases call it "random_seed"
    extra_outputs: tuple[str, ...] = ("num_input_tokens", "num_output_tokens", "finish_reason")


@dataclass
class RewardModel:
    name: str = "reward"
    step_delimiter: str = "\n\n"


@dataclass
class BLSContext:
    trace: object | None = None  # the parent request's trace, so sub-requests show up under it
    timeout_us: int = 0


class BLSGenerationWorker:
    def __init__(self, model: GenerationModel, context: BLSContext):
        self.model = model
        self.context = context

    def _request(self, task: GenerationTask) -> "pb_utils.InferenceRequest":
        greedy = task.temperature <= 0
        inputs = [
            _tensor("text_input", task.prompt, np.object_),
            _tensor("max_tokens", task.max_tokens, np.int32),
            # greedy as top_k=1 at temperature 1: portable to engines that divide by temperature
            _tensor("temperature", 1.0 if greedy else task.temperature, np.float32),
            _tensor("top_p", 1.0 if greedy else task.top_p, np.float32),
            _tensor("top_k", 1 if greedy else task.top_k, np.int32),
            _tensor("return_log_probs", task.return_log_probs, np.bool_),
            _tensor("exclude_input_in_output", True, np.bool_),
        ]
        if task.seed is not None:
            inputs.append(_tensor(self.model.seed_input, task.seed, np.uint64))
        if task.stop_words:
            inputs.append(pb_utils.Tensor("stop_words", np.array([task.stop_words], dtype=np.object_)))
        outputs = ["text_output", "cum_log_probs", *self.model.extra_outputs]
        if task.return_log_probs:
            outputs.append("output_log_probs")
        kwargs = {"trace": self.context.trace} if self.context.trace is not None else {}
        return pb_utils.InferenceRequest(
            model_name=self.model.name,
            inputs=inputs,
            requested_output_names=outputs,
            timeout=self.context.timeout_us,
            **kwargs,
        )

    async def _run_one(self, task: GenerationTask, on_done: TaskDone) -> None:
        response = await self._request(task).async_exec()
        if response.has_error():
            raise BLSError(f"model '{self.model.name}': {response.error().message()}")
        task.output_text = _text(_output(response, "text_output"))
        cum = _output(response, "cum_log_probs")
        task.cum_log_prob = float(cum.reshape(-1)[0]) if cum is not None else None
        log_probs = _output(response, "output_log_probs")
        if log_probs is not None:
            task.token_log_probs = log_probs.reshape(-1).astype(float).tolist()[: self._num_output(response, log_probs)]
        task.num_output_tokens = self._num_output(response, log_probs)
        prompt_tokens = _output(response, "num_input_tokens")
        task.num_prompt_tokens = int(prompt_tokens.reshape(-1)[0]) if prompt_tokens is not None else 0
        reason = _output(response, "finish_reason")
        task.finish_reason = _text(reason) if reason is not None else None
        on_done(task)

    @staticmethod
    def _num_output(response, log_probs) -> int:
        count = _output(response, "num_output_tokens")
        if count is not None:
            return int(count.reshape(-1)[0])
        return 0 if log_probs is None else int(log_probs.reshape(-1).shape[0])

    async def run(self, tasks: list[Task], on_done: TaskDone) -> int:
        # One BLS request per task: the generator's dynamic batcher (or TensorRT-LLM's
        # in-flight batcher) groups them, across requests as well as within one.
        await asyncio.gather(*(self._run_one(task, on_done) for task in tasks))
        return len(tasks)


class BLSRewardWorker:
    """All reward tasks of one yield go as one batched request."""

    def __init__(self, model: RewardModel, context: BLSContext):
        self.model = model
        self.context = context

    async def run(self, tasks: list[Task], on_done: TaskDone) -> int:
        rewards = [task for task in tasks if isinstance(task, RewardTask)]
        queries = np.array([[task.query] for task in rewards], dtype=np.object_)
        responses = np.array([[self.model.step_delimiter.join(task.steps)] for task in rewards], dtype=np.object_)
        kwargs = {"trace": self.context.trace} if self.context.trace is not None else {}
        request = pb_utils.InferenceRequest(
            model_name=self.model.name,
            inputs=[pb_utils.Tensor("query", queries), pb_utils.Tensor("response", responses)],
            requested_output_names=["step_scores", "score", "num_steps"],
            timeout=self.context.timeout_us,
            **kwargs,
        )
        response = await request.async_exec()
        if response.has_error():
            raise BLSError(f"model '{self.model.name}': {response.error().message()}")
        step_scores = _output(response, "step_scores")
        scores = _output(response, "score").reshape(-1)
        num_steps = _output(response, "num_steps").reshape(-1)
        for index, task in enumerate(rewards):
            task.score = float(scores[index])
            task.step_scores = step_scores[index, : int(num_steps[index])].astype(float).tolist()
            on_done(task)
        return 1
