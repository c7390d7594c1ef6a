"""What every generation engine behind the ``generator`` model shares: a request, its
result, the handle of a running generation, the engine's counters, and the interface the
model serves (``Engine``). Kept apart from the engines so that one without torch (the echo
engine) does not import it."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol


@dataclass
class GenerationRequest:
    prompt: str
    max_tokens: int
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 means no top-k filter
    seed: int | None = None
    stop_words: list[str] = field(default_factory=list)


@dataclass
class GenerationResult:
    text: str
    num_prompt_tokens: int
    num_output_tokens: int
    cum_log_prob: float
    token_log_probs: list[float]
    finish_reason: str  # "eos", "stop_word", "length", "cancelled" or "error"
    error: str | None = None


# called from the engine's thread: (the new text since the last call, the token's log-probability)
TokenCallback = Callable[[str, float], None]
FinishCallback = Callable[[GenerationResult], None]


class Generation:
    """One request in the engine: cancel it, or wait for its result."""

    def __init__(
        self,
        request: GenerationRequest,
        on_token: TokenCallback | None,
        on_finish: FinishCallback | None,
    ):
        self.request = request
        self.on_token = on_token
        self.on_finish = on_finish
        self.cancelled = False
        # held while the engine writes this request's token, so a cancel falls between tokens
        self.writing = threading.Lock()
        self.result: GenerationResult | None = None
        self.done = threading.Event()

    def cancel(self) -> None:
        """Leave the batch at the next decode step (no token is written after this)."""
        with self.writing:
            self.cancelled = True

    def wait(self, timeout: float | None = None) -> GenerationResult:
        if not self.done.wait(timeout):
            raise TimeoutError("the generation did not finish in time")
        assert self.result is not None
        return self.result


@dataclass
class EngineStats:
    generations: int = 0  # requests that left the engine (finished, cancelled or failed)
    tokens: int = 0  # tokens written
    steps: int = 0  # decode steps (batched forward passes after a prefill)
    cancelled: int = 0  # requests that left the batch cancelled
    tokens_after_cancel: int = 0  # tokens written for a request after its cancel (should stay 0)


class Engine(Protocol):
    """What the ``generator`` model needs of an engine."""

    stats: EngineStats
    max_context: int | None  # prompt plus output tokens; None: no limit

    def count_tokens(self, text: str) -> int: ...

    def submit(
        self,
        request: GenerationRequest,
        on_token: TokenCallback | None = None,
        on_finish: FinishCallback | None = None,
    ) -> Generation:
        """Queue a request (thread-safe); callbacks come from the engine's thread."""
        ...

    def close(self) -> None: ...


class StopsByRequestId:
    """The generations of running requests, by the request id a stop request names (as
    TensorRT-LLM's ``stop`` input does). Several running requests may share an id (clients
    choose ids): a stop ends all of them, and one that finishes leaves the others
    stoppable. A stop that overtook its request (both were sent, the stop arrived first)
    is kept ``memory_s`` seconds for it, at most ``memory_size`` of them. A stop that came
    late, for an id whose last request finished within ``memory_s``, is dropped: kept, it
    would end the next request that reuses the id."""

    def __init__(self, memory_s: float = 60.0, memory_size: int = 4096):
        self.memory_s = memory_s
        self.memory_size = memory_size
        self._running: dict[str, list[list[Generation]]] = {}
        self._early: OrderedDict[str, float] = OrderedDict()  # id -> when its stop came
        self._finished: OrderedDict[str, float] = OrderedDict()  # id -> when it last finished

    def started(self, request_id: str, generations: list[Generation]) -> None:
        self._running.setdefault(request_id, []).append(generations)
        if self._early.pop(request_id, None) is not None:
            for generation in generations:
                generation.cancel()

    def finished(self, request_id: str, generations: list[Generation]) -> None:
        groups = self._running.get(request_id, [])
        if generations in groups:
            groups.remove(generations)
        if not groups:
            self._running.pop(request_id, None)
            self._remember(self._finished, request_id)

    def stop(self, request_id: str) -> None:
        groups = self._running.get(request_id)
        if groups:
            for generations in groups:
                for generation in generations:
                    generation.cancel()
            return
        self._forget_old(self._finished)
        if request_id in self._finished:
            return  # too late: its request has ended
        self._remember(self._early, request_id)

    def _remember(self, memory: OrderedDict[str, float], request_id: str) -> None:
        memory[request_id] = time.monotonic()
        memory.move_to_end(request_id)
        self._forget_old(memory)

    def _forget_old(self, memory: OrderedDict[str, float]) -> None:
        oldest = time.monotonic() - self.memory_s
        while len(memory) > self.memory_size or (memory and next(iter(memory.values())) < oldest):
            memory.popitem(last=False)
