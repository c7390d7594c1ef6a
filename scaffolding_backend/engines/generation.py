"""What every generation engine behind the ``generator`` model shares: a request, its
result, the handle of a running generation, the engine's counters, and the interface the
model serves (``Engine``). Kept apart from the engines so that one without torch (the echo
engine) does not import it."""

from __future__ import annotations

import threading
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
