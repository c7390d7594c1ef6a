"""What every generation contract adapter shares: the capabilities it declares, the
reply it assembles from an engine's responses, and the honest fallbacks the worker
applies where an engine does not say something itself.

An adapter knows one engine's contract (input names, dtypes, shapes, what comes back)
and nothing of methods; the transport (Triton BLS, HTTP) knows nothing of contracts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np

from ...kernel.runtime import WorkerError
from ...kernel.tasks import FinishReason, GenerationTask

Outputs = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class Capabilities:
    """What an engine's contract offers; the worker fills in what it does not."""

    decoupled: bool = False  # called with decoupled BLS: one or more responses, then a final flag
    streams: bool = False  # honours a stream flag with one response per new chunk of tokens
    finish_reason: bool = False  # says why a generation ended
    token_counts: bool = False  # returns prompt and output token counts
    log_probs: bool = False  # returns per-token log-probs of the output
    excludes_prompt: bool = True  # can be told to leave the prompt out of the returned text
    stop_request: bool = (
        False  # a second request (same request id, stop=true) cancels one in flight
    )
    samples_per_request: int = 1  # n; the worker still sends one task per request (one seed each)
    # takes several tasks as the rows of one request (``batch_request``), answered together
    batches: bool = False


@dataclass
class EngineReply:
    """A generation as the engine gave it; ``None`` where the engine said nothing."""

    text: str
    finish_reason: FinishReason | None = None
    may_echo_prompt: bool = False  # the text may start with the prompt (an engine that echoes it)
    stop_word: str | None = None  # the stop word that ended it, where the engine names it
    num_prompt_tokens: int | None = None
    num_output_tokens: int | None = None
    token_log_probs: list[float] | None = None
    cum_log_prob: float | None = None


@dataclass(frozen=True)
class TritonRequest:
    """One BLS request: the inputs the target declares, the outputs to ask for, and
    request parameters."""

    inputs: dict[str, np.ndarray]
    outputs: tuple[str, ...]
    parameters: dict[str, Any] = field(default_factory=dict)


class TokenCounter(Protocol):
    def count(self, text: str) -> int: ...

    def round_trip(self, text: str) -> str:
        """The text encoded and decoded again: what an engine that echoes the prompt
        from its tokens gives back."""
        ...


class ContractError(WorkerError):
    """An engine answered in a way its contract does not allow, or said it gave up."""


class TritonContract:
    """Base of the adapters for generation models served by Triton. ``releases`` lists the
    releases whose contracts differ (the first is the default); ``decoupled`` says how
    the target is deployed (None: the contract's default); ``stream`` asks a decoupled
    target for one response per chunk of tokens, which the adapter assembles."""

    name: ClassVar[str]
    releases: ClassVar[tuple[str, ...]] = ("current",)

    def __init__(self, *, release: str = "", decoupled: bool | None = None, stream: bool = False):
        self.release = release or self.releases[0]
        if self.release not in self.releases:
            known = ", ".join(self.releases)
            raise ValueError(
                f"contract {self.name} has no release {self.release!r}; known: {known}"
            )
        self.capabilities = self.capabilities_of(self.release)
        self.decoupled = self.capabilities.decoupled if decoupled is None else decoupled
        self.stream = stream and self.decoupled and self.capabilities.streams

    def capabilities_of(self, release: str) -> Capabilities:  # pragma: no cover - interface
        raise NotImplementedError

    def request(self, task: GenerationTask) -> TritonRequest:  # pragma: no cover - interface
        raise NotImplementedError

    def reply(
        self, task: GenerationTask, responses: Sequence[Outputs]
    ) -> EngineReply:  # pragma: no cover
        raise NotImplementedError

    def batch_request(
        self, tasks: Sequence[GenerationTask]
    ) -> TritonRequest:  # pragma: no cover - where capabilities.batches
        """Tasks that do not stream, as the rows of one request; its responses hold a row
        per task, in order (``rows_of``)."""
        raise NotImplementedError

    def stop_request(self) -> TritonRequest:  # pragma: no cover - where capabilities.stop_request
        raise NotImplementedError

    def chunk(self, outputs: Outputs) -> tuple[str, list[float]] | None:
        """A streamed response as (new text, its tokens' log-probs); None where the response
        is not a chunk of new tokens (a final one, or a contract that does not stream deltas)."""
        return None

    def is_last(self, outputs: Outputs) -> bool:
        """Whether the target sends this response with the final flag, so nothing follows
        it and the worker can stop reading without another wait. False where the contract
        cannot tell: the worker then reads until the target says it is done."""
        return False

    def streams_for(self, task: GenerationTask) -> bool:
        """Whether to ask the target to stream this task: when configured, or when the task
        wants its chunks (``on_chunk``) and the target can stream."""
        wants = self.stream or task.on_chunk is not None
        return wants and self.decoupled and self.capabilities.streams


def scalar(value: Any, dtype: Any, *, batched: bool = True) -> np.ndarray:
    """One element: [1, 1] for a model with a batch dimension, [1] for one without."""
    return np.array([[value]] if batched else [value], dtype=dtype)


def strings(values: Sequence[str], *, batched: bool = True) -> np.ndarray:
    """A list of strings (``dims: [-1]``): [1, n] with a batch dimension, [n] without."""
    items = list(values)
    return np.array([items] if batched else items, dtype=np.object_)


def rows_of(outputs: Outputs, count: int) -> list[dict[str, np.ndarray]]:
    """A batched response's outputs, one dict per row (each array keeps its batch
    dimension, as a response to one task has it)."""
    return [{name: array[row : row + 1] for name, array in outputs.items()} for row in range(count)]


def text_of(array: np.ndarray | None) -> str:
    if array is None:
        return ""
    flat = array.reshape(-1)
    if flat.size == 0:
        return ""
    value = flat[0]
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def first_int(array: np.ndarray | None) -> int | None:
    return None if array is None or array.size == 0 else int(array.reshape(-1)[0])


def first_float(array: np.ndarray | None) -> float | None:
    if array is None or array.size == 0:
        return None
    value = array.reshape(-1)[0]
    try:  # some engines send a number as a string tensor
        return float(value.decode() if isinstance(value, bytes) else value)
    except ValueError:
        return None


def finish(task: GenerationTask, reply: EngineReply, counter: TokenCounter | None) -> None:
    """Fill ``task`` from ``reply``, deciding what the engine left unsaid:

    * the prompt, when an engine echoed it (as given, or re-decoded from its tokens);
    * the finish reason, from the text: a stop word in it ended the step there (the text is
      cut at it, as an engine that honours stop words and hides them does), else max_tokens
      (when the count says so) or the end of the text;
    * token counts: the engine's, else the length of its log-probs, else the tokenizer
      named in config; ``task.token_counts_from`` says which.
    """
    text = reply.text
    if reply.may_echo_prompt:
        echoes = [task.prompt] + ([counter.round_trip(task.prompt)] if counter is not None else [])
        text = next((text[len(echo) :] for echo in echoes if echo and text.startswith(echo)), text)
    reason, stop_word = reply.finish_reason, reply.stop_word
    hits = sorted((text.find(word), word) for word in task.stop_words if word and word in text)
    if hits and reason in (None, FinishReason.STOP_WORD, FinishReason.EOS):
        (cut, stop_word), reason = hits[0], FinishReason.STOP_WORD
        text = text[:cut]
    output_tokens, source = reply.num_output_tokens, "engine"
    if output_tokens is None and reply.token_log_probs is not None:
        output_tokens, source = len(reply.token_log_probs), "log_probs"
    if output_tokens is None and counter is not None:
        # the stop word was generated too, though an engine may keep it out of the text
        written = text + (stop_word or "") if reason is FinishReason.STOP_WORD else text
        output_tokens, source = counter.count(written), "tokenizer"
    prompt_tokens = reply.num_prompt_tokens
    if prompt_tokens is None and counter is not None:
        prompt_tokens = counter.count(task.prompt)
    if reason is None:
        at_limit = output_tokens is not None and output_tokens >= task.max_tokens
        reason = FinishReason.LENGTH if at_limit else FinishReason.EOS
    task.output_text = text
    task.finish_reason = reason
    task.num_output_tokens = output_tokens or 0
    task.num_prompt_tokens = prompt_tokens or 0
    task.token_counts_from = source if output_tokens is not None else "none"
    task.cum_log_prob = reply.cum_log_prob
    task.token_log_probs = reply.token_log_probs if task.return_log_probs else None
