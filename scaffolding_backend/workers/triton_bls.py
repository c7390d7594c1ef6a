"""Workers that send tasks to co-hosted Triton models over BLS (``async_exec``).

Generation speaks whichever contract the adapter declares (``contracts/``): the
worker sends what the adapter builds, calls decoupled targets with decoupled BLS and
hands every response to the adapter. A generation the request no longer needs
(cancelled, past its deadline) is cancelled at the target where Triton or the contract
allows it. Only importable inside a Triton Python-backend stub.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from ..kernel.params import INVALID_INPUT
from ..kernel.prompts import PromptFormat
from ..kernel.runtime import TaskDone, WorkerError
from ..kernel.tasks import GenerationTask, RewardTask, Task
from .context import RequestContext
from .contracts import TritonContract, TritonRequest, finish
from .contracts.base import TokenCounter, rows_of

_executor_loops: set[int] = set()
# request ids the generator's stop input finds a generation by: unique per stub with a counter
# (uuid4 reads the OS's random source each time: a twentieth of the event loop's time)
_REQUEST_ID_PREFIX = uuid.uuid4().hex[:12]
_request_numbers = itertools.count()
_background: set[asyncio.Future] = set()  # stop requests in flight, kept from the collector


def ensure_bls_executor(threads: int) -> None:
    """``async_exec`` waits in the loop's default executor, min(32, cpus + 4) threads
    unless told otherwise: 6 on a 2-core machine, which silently caps concurrent
    sub-requests. Give the running loop a pool sized from configuration instead."""
    loop = asyncio.get_running_loop()
    if id(loop) not in _executor_loops:
        loop.set_default_executor(ThreadPoolExecutor(max_workers=threads, thread_name_prefix="bls"))
        _executor_loops.add(id(loop))


# A decoupled BLS request whose response iterator ends before its first response is sent
# again. In python_backend (pb_stub.cc GetResponseIterator, release r24.10) a new request
# whose server-side id is one a finished request had (the address is reused) takes over the
# responses still buffered under that id and ends the older iterator: the older request's
# reader then finds nothing. Seen with generations refused at once (2-3% of them, 4 in
# flight); its loser reads nothing rather than a stranger's response, since a reader stops
# at its contract's last response.
RESENDS_OF_A_LOST_GENERATION = 2


class SubRequestFailed(WorkerError):
    """A model called over BLS answered with an error (the client's fault when the model
    refused the input as invalid)."""


def _outputs(response: Any, model: str) -> dict[str, np.ndarray]:
    if response.has_error():
        error = response.error()
        # Triton 2.51 hands a BLS caller every error as INTERNAL; this project's models say
        # "invalid input" in the message of a refusal, which survives the trip
        message = error.message()
        refused = error.code() == pb_utils.TritonError.INVALID_ARG or INVALID_INPUT in message
        raise SubRequestFailed(f"model '{model}': {message}", client_error=refused)
    return {tensor.name(): tensor.as_numpy() for tensor in response.output_tensors()}


async def send_decoupled(request: Any) -> DecoupledResponses:
    """Send a decoupled BLS request; its responses, read as ``DecoupledResponses``."""
    return DecoupledResponses(await request.async_exec(decoupled=True))


# Finished response iterators, kept alive for RETIRE_S (see DecoupledResponses.retire).
_retired: deque[tuple[float, Any]] = deque()
RETIRE_S = 5.0


def release_retired() -> None:
    """For a model's ``finalize``: free the kept iterators while the stub still runs (at
    interpreter exit their shared memory is gone, and freeing them crashed the stub)."""
    _retired.clear()


class DecoupledResponses:
    """A decoupled BLS response iterator read from executor threads, one thread at a time.

    A read blocks its thread until the next response. When the coroutine waiting on it is
    cancelled, that thread is still inside the iterator, and the rest of the responses must
    still be read (``exhaust``) or the engine's stream backs up: the lock keeps a second
    thread from racing the first for a response."""

    def __init__(self, responses: Iterator[Any]):
        self.iterator = responses
        self._lock = threading.Lock()
        self._ended = False

    def next_or_none(self) -> Any | None:
        with self._lock:
            if self._ended:
                return None
            response = next(self.iterator, None)
            if response is None:
                self._ended = True
                self.retire()
            return response

    def first(self) -> Any | None:
        """The first response, read on the caller's thread: it never blocks, because
        ``async_exec`` hands over the iterator once the first response has arrived, and the
        iterator holds it from the start (python_backend ``pb_response_iterator.cc``,
        release r24.10). One executor hop less per sub-request."""
        return self.next_or_none()

    def ended(self) -> None:
        """The last response was read (the caller knows it from the contract): the iterator
        has ended and cleaned up, and there is nothing left to read."""
        with self._lock:
            if not self._ended:
                self._ended = True
                self.retire()

    def retire(self) -> None:
        """Keep the finished iterator alive a few seconds longer. Its last response makes the
        Triton 2.51 stub schedule a clean-up in which a C++ thread drops the stub's own
        reference to the iterator without holding the GIL. Were that the last reference,
        the iterator and the responses and numpy arrays it holds would be freed there,
        without the GIL: stubs then died at random under load (segfaults in pymalloc and
        libpython, "corrupted size vs. prev_size", "unaligned fastbin chunk"). Held here,
        the last reference goes when it leaves this queue, in a thread that has the GIL."""
        now = time.monotonic()
        _retired.append((now, self.iterator))
        while _retired and now - _retired[0][0] > RETIRE_S:
            _retired.popleft()

    def exhaust(self) -> None:
        self.read_all()

    def read_all(self) -> list[Any]:
        """Every response left (blocking: run it in an executor)."""
        responses = []
        while (response := self.next_or_none()) is not None:
            responses.append(response)
        return responses


def _in_background(work: Any) -> None:
    """Run a coroutine or future to its end without anyone awaiting it."""
    task = asyncio.ensure_future(work)
    _background.add(task)
    task.add_done_callback(_background.discard)


def _inference_request(
    model: str, request: TritonRequest, context: RequestContext, request_id: str = ""
) -> Any:
    remaining = context.remaining_s()
    kwargs: dict[str, Any] = {"trace": context.trace} if context.trace is not None else {}
    if request.parameters:
        kwargs["parameters"] = request.parameters
    return pb_utils.InferenceRequest(
        model_name=model,
        inputs=[pb_utils.Tensor(name, value) for name, value in request.inputs.items()],
        requested_output_names=list(request.outputs),
        request_id=request_id,
        timeout=0 if remaining is None else max(1, int(remaining * 1e6)),
        **kwargs,
    )


async def send(
    model: str, request: TritonRequest, context: RequestContext
) -> dict[str, np.ndarray]:
    """One request to a model that answers once."""
    return _outputs(await _inference_request(model, request, context).async_exec(), model)


class BLSGenerationWorker:
    """Sends generation tasks to a Triton model, one task per request; with ``fold`` above 1
    and a target that takes batches, the tasks of one yield that neither stream nor are
    wanted alone (``foldable``) go as the rows of requests of up to ``fold`` tasks. A fold
    costs one BLS call instead of one per task, and its tasks finish together."""

    def __init__(
        self,
        model: str,
        contract: TritonContract,
        context: RequestContext,
        counter: TokenCounter | None,
        fold: int = 1,
    ):
        self.model = model
        self.contract = contract
        self.context = context
        self.counter = counter
        self.fold = fold if contract.capabilities.batches else 1

    def _requests_for(self, tasks: list[GenerationTask]) -> list[list[GenerationTask]]:
        """The tasks of each request to send."""
        if self.fold == 1:
            return [[task] for task in tasks]
        alone = [[task] for task in tasks if not self._foldable(task)]
        # rows of one request must agree on the flags that decide how it is answered
        by_flags: dict[bool, list[GenerationTask]] = {}
        for task in tasks:
            if self._foldable(task):
                by_flags.setdefault(task.return_log_probs, []).append(task)
        folds = [
            group[start : start + self.fold]
            for group in by_flags.values()
            for start in range(0, len(group), self.fold)
        ]
        return alone + folds

    def _foldable(self, task: GenerationTask) -> bool:
        return task.foldable and not self.contract.streams_for(task)

    async def _send_decoupled(
        self, tasks: list[GenerationTask], request: TritonRequest
    ) -> list[dict[str, np.ndarray]]:
        """Every response's outputs, in order (a decoupled target may send several, and a
        last one with no outputs that only carries the final flag). Streamed chunks go to
        the task's ``on_chunk`` as they come; a stop the tasks ask for goes to the engine."""
        request_id = f"{_REQUEST_ID_PREFIX}-{next(_request_numbers)}"

        def stop_when_none_is_wanted() -> None:
            if all(task.stop_requested for task in tasks):
                self._stop(request_id)

        for task in tasks:
            task.on_stop(stop_when_none_is_wanted)
        try:
            # async_exec returns with the first response: for a generation that does not
            # stream, once it has ended. A cancel that comes meanwhile must reach the engine.
            responses = await send_decoupled(
                _inference_request(self.model, request, self.context, request_id)
            )
        except asyncio.CancelledError:
            self._stop(request_id)
            raise
        # only a request of one task streams (a fold never does)
        task, streamed = tasks[0], self.contract.streams_for(tasks[0])
        collected: list[dict[str, np.ndarray]] = []
        loop = asyncio.get_running_loop()
        try:
            response = responses.first()
            while response is not None:
                outputs = _outputs(response, self.model)
                if outputs:
                    collected.append(outputs)
                    chunk = self.contract.chunk(outputs) if streamed else None
                    if chunk is not None and task.on_chunk and task.on_chunk(task, *chunk):
                        task.request_stop()
                    if self.contract.is_last(outputs):
                        responses.ended()
                        return collected
                # a later read blocks until the next response: wait in the executor
                response = await loop.run_in_executor(None, responses.next_or_none)
            return collected
        except BaseException:  # cancelled, or an error response: read the rest elsewhere
            self._abandon(responses, request_id)
            raise

    def _stop(self, request_id: str) -> None:
        """Ask the engine to end a generation (where the Python backend's BLS cancellation is
        missing, as on Triton 2.51, through the contract's stop request); the engine's last
        response then says how far it got."""
        if self.contract.capabilities.stop_request:
            stop = _inference_request(
                self.model, self.contract.stop_request(), RequestContext(), request_id
            )
            _in_background(self._drain(stop))

    def _abandon(self, responses: DecoupledResponses, request_id: str) -> None:
        """Nobody waits for this generation any more: cancel it (Triton's BLS cancellation
        where the Python backend has it, else the stop request) and read what is left of
        its responses in a thread, where the iterator may block until the engine ends."""
        if hasattr(responses.iterator, "cancel"):
            responses.iterator.cancel()
        else:
            self._stop(request_id)
        loop = asyncio.get_running_loop()
        _in_background(loop.run_in_executor(None, responses.exhaust))

    async def _drain(self, request: Any) -> None:
        """Send a request nobody waits for and read its responses to the end."""
        if not self.contract.decoupled:
            await request.async_exec()
            return
        responses = await send_decoupled(request)
        await asyncio.get_running_loop().run_in_executor(None, responses.exhaust)

    async def _run_request(self, tasks: list[GenerationTask], on_done: TaskDone) -> None:
        if len(tasks) == 1:
            request = self.contract.request(tasks[0])
        else:
            request = self.contract.batch_request(tasks)
        for _ in range(1 + RESENDS_OF_A_LOST_GENERATION):
            async with self.context.slot():
                if self.contract.decoupled:
                    responses = await self._send_decoupled(tasks, request)
                else:
                    responses = [await send(self.model, request, self.context)]
            if responses:
                break
            # the same inputs and seeds: the same generations
            pb_utils.Logger.log_warn(
                f"model '{self.model}': a decoupled BLS request ended with no response; sent again"
            )
        else:
            raise SubRequestFailed(f"model '{self.model}' sent no response with outputs")
        if len(tasks) == 1:
            per_task = [responses]
        else:  # a fold is answered by one response holding a row per task
            rows = [rows_of(outputs, len(tasks)) for outputs in responses]
            per_task = [[response[index] for response in rows] for index in range(len(tasks))]
        for task, task_responses in zip(tasks, per_task):
            finish(task, self.contract.reply(task, task_responses), self.counter)
            if task.on_chunk is not None and not self.contract.streams_for(task):
                task.on_chunk(task, task.output_text or "", task.token_log_probs or [])  # at once
            on_done(task)

    async def run(self, tasks: list[Task], on_done: TaskDone) -> int:
        # Unfolded, one BLS request per task: the generator's in-flight batching (or
        # TensorRT-LLM's) runs them together, across requests as well as within one.
        generations = [task for task in tasks if isinstance(task, GenerationTask)]
        requests = self._requests_for(generations)
        await asyncio.gather(*(self._run_request(group, on_done) for group in requests))
        return len(requests)


class BLSRewardWorker:
    """All reward tasks of one yield go as one batched request, with the prompt format
    the generator used, so the reward model scores exactly the text that was written."""

    def __init__(self, model: str, prompt_format: PromptFormat, context: RequestContext):
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
        async with self.context.slot():
            outputs = await send(self.model, request, self.context)
        scores = outputs["score"].reshape(-1)
        num_steps = outputs["num_steps"].reshape(-1)
        for index, task in enumerate(rewards):
            task.score = float(scores[index])
            task.step_scores = (
                outputs["step_scores"][index, : int(num_steps[index])].astype(float).tolist()
            )
            on_done(task)
        return 1
