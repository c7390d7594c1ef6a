"""What every generation contract adapter shares: the capabilities it declares, the
reply it assembles from an engine's responses, and the honest fallbacks the worker
applies where an engine does not say something itself.

An adapter knows one engine's contract (input names, dtypes, what comes back) and
nothing of methods; the transport (Triton BLS, HTTP) knows nothing of contracts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np

from ...kernel.tasks import FinishReason, GenerationTask

Outputs = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class Capabilities:
    """What an engine's contract offers; the worker fills in what it does not."""

    decoupled: bool = False  # called with decoupled BLS: one or more responses, then a final flag
    streams: bool = False  # honours stream=true with one response per new chunk of tokens
    finish_reason: bool = False  # says why a generation ended
    token_counts: bool = False  # returns prompt and output token counts
    log_probs: bool = False  # returns per-token log-probs of the output
    excludes_prompt: bool = True  # can leave the prompt out of the returned text


@dataclass
class EngineReply:
    """A generation as the engine gave it; ``None`` where the engine said nothing."""

    text: str
    finish_reason: FinishReason | None = None
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


class TritonContract:
    """Base of the adapters for generation models served by Triton."""

    name: ClassVar[str]
    capabilities: ClassVar[Capabilities]

    def __init__(self, *, decoupled: bool | None = None):
        # a TensorRT-LLM model is decoupled when deployed with decoupled_mode;
        # the contract's default otherwise
        self.decoupled = self.capabilities.decoupled if decoupled is None else decoupled

    def request(self, task: GenerationTask) -> TritonRequest:  # pragma: no cover - interface
        raise NotImplementedError

    def reply(
        self, task: GenerationTask, responses: Sequence[Outputs]
    ) -> EngineReply:  # pragma: no cover
        raise NotImplementedError


def scalar(value: Any, dtype: Any) -> np.ndarray:
    """A [1, 1] tensor: batch of one, one element (the shape of ``dims: [1]`` with batching)."""
    return np.array([[value]], dtype=dtype)


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
    return None if array is None or array.size == 0 else float(array.reshape(-1)[0])


def without_prompt(text: str, prompt: str) -> str:
    """The generated part of a text an engine returned with the prompt in front."""
    return text[len(prompt) :] if text.startswith(prompt) else text


def finish(task: GenerationTask, reply: EngineReply, counter: TokenCounter | None) -> None:
    """Fill ``task`` from ``reply``, deciding what the engine left unsaid:

    * the finish reason, from the text: a stop word in it ended the step there (the text is
      cut at it, as an engine that honours stop words does), else max_tokens (when the
      count says so) or the end of the text;
    * token counts: the engine's, else the length of its log-probs, else the tokenizer
      named in config; ``task.token_counts_from`` says which.
    """
    text = reply.text
    reason = reply.finish_reason
    hits = [text.find(word) for word in task.stop_words if word and word in text]
    if hits and reason in (None, FinishReason.STOP_WORD, FinishReason.EOS):
        # an engine that keeps the stop word in its text, or says only "stopped"
        text, reason = text[: min(hits)], FinishReason.STOP_WORD
    output_tokens, source = reply.num_output_tokens, "engine"
    if output_tokens is None and reply.token_log_probs is not None:
        output_tokens, source = len(reply.token_log_probs), "log_probs"
    if output_tokens is None and counter is not None:
        output_tokens, source = counter.count(text), "tokenizer"
    prompt_tokens = reply.num_prompt_tokens
    if prompt_tokens is None and counter is not None:
        prompt_tokens = counter.count(task.prompt)
    if reason is None:
        reason = (
            FinishReason.LENGTH
            if output_tokens is not None and output_tokens >= task.max_tokens
            else FinishReason.EOS
        )
    task.output_text = text
    task.finish_reason = reason
    task.num_output_tokens = output_tokens or 0
    task.num_prompt_tokens = prompt_tokens or 0
    task.token_counts_from = source if output_tokens is not None else "none"
    task.cum_log_prob = reply.cum_log_prob
    task.token_log_probs = reply.token_log_probs if task.return_log_probs else None
