"""Units of work a controller hands to the runtime, and the results workers fill in."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

GENERATION = "generation"
REWARD = "reward"
SANDBOX = "sandbox"
# generations of programs (program-aided methods): a worker of their own, so a deployment can
# send them to a model that writes programs
PROGRAM_GENERATION = "program_generation"


class FinishReason(str, enum.Enum):
    """Why a generation ended, whatever words its engine uses for it."""

    EOS = "eos"  # the model ended the text
    STOP_WORD = "stop_word"  # a stop word was written (a step ended at the delimiter)
    LENGTH = "length"  # cut by max_tokens or the context
    CANCELLED = "cancelled"  # the caller stopped it


@dataclass
class Task:
    worker_tag: str
    phase: str  # account label for the wall time spent waiting on this task
    # called by the runtime as soon as this task finishes; a returned Progress is streamed
    on_done: Callable[[Task], Any] | None = field(default=None, repr=False, kw_only=True)
    finished: bool = field(default=False, init=False, repr=False)
    stop_requested: bool = field(default=False, init=False, repr=False)
    _stop_listeners: list[Callable[[], None]] = field(default_factory=list, init=False, repr=False)

    def request_stop(self) -> None:
        """Nobody needs this task's result any more: its worker stops it where the engine
        allows (a task that already finished is left alone)."""
        if self.finished or self.stop_requested:
            return
        self.stop_requested = True
        for listener in self._stop_listeners:
            listener()

    def on_stop(self, listener: Callable[[], None]) -> None:
        """For workers: ``listener()`` runs once a stop is requested (at once if it was)."""
        if self.stop_requested:
            listener()
        else:
            self._stop_listeners.append(listener)


@dataclass
class GenerationTask(Task):
    prompt: str = ""
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None  # None on a sampled task: the runtime derives one from the request seed
    stop_words: list[str] = field(default_factory=list)
    return_log_probs: bool = False
    # called by the worker with each chunk of new text and its tokens' log-probs as the
    # engine writes them (a streaming engine; otherwise once, with the whole text); a true
    # return value stops the generation there
    on_chunk: Callable[[GenerationTask, str, list[float]], bool] | None = field(
        default=None, repr=False
    )
    # a candidate answer's text: when the request asks for tokens, the runtime streams it
    # to the client as it is written, under this label
    stream_as: str | None = None
    # set by the runtime: False where the result is wanted the moment it is done (a yield
    # that may settle before every task has finished), so a worker must not fold it into
    # one request with others that finish later
    foldable: bool = field(default=True, repr=False)
    # filled in by the worker
    output_text: str | None = None
    num_prompt_tokens: int = 0
    num_output_tokens: int = 0
    token_counts_from: str = "none"  # "engine", "log_probs", "tokenizer" or "none"
    cum_log_prob: float | None = None
    token_log_probs: list[float] | None = None
    finish_reason: FinishReason | None = None

    @property
    def sampled(self) -> bool:
        return self.temperature > 0

    @property
    def complete(self) -> bool:
        """Generated to its natural end (not stopped part-way, not abandoned)."""
        return self.finished and self.finish_reason is not FinishReason.CANCELLED


@dataclass
class RewardTask(Task):
    query: str = ""
    steps: list[str] = field(default_factory=list)
    # filled in by the worker
    step_scores: list[float] | None = None
    score: float | None = None


@dataclass
class SandboxTask(Task):
    """Run a (generated, untrusted) Python program in the sandbox."""

    code: str = ""
    stdin: str = ""
    # filled in by the worker
    stdout: str | None = None
    stderr: str | None = None
    exit_status: int | None = None  # the exit code, or -N when killed by signal N
    wall_s: float | None = None
    cpu_s: float | None = None
    killed_reason: str | None = None  # "" when the program ended by itself

    @property
    def succeeded(self) -> bool:
        return self.exit_status == 0 and not self.killed_reason


def generation(
    prompt: str,
    *,
    max_tokens: int,
    temperature: float = 0.0,
    phase: str = "generate",
    **kwargs: Any,
) -> GenerationTask:
    return GenerationTask(
        worker_tag=GENERATION,
        phase=phase,
        prompt=prompt,
        max_tokens=max_tokens,
        temperature=temperature,
        **kwargs,
    )


def reward(query: str, steps: list[str], *, phase: str = "score") -> RewardTask:
    return RewardTask(worker_tag=REWARD, phase=phase, query=query, steps=list(steps))


def sandbox(code: str, stdin: str = "", *, phase: str = "execute") -> SandboxTask:
    return SandboxTask(worker_tag=SANDBOX, phase=phase, code=code, stdin=stdin)
