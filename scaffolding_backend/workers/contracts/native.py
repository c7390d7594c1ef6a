"""This project's ``generator`` model (``model_repository/generator/config.pbtxt``):
TensorRT-LLM's input names, plus the outputs TensorRT-LLM lacks: ``finish_reason``
and the token counts. Not decoupled."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...kernel.tasks import FinishReason, GenerationTask
from .base import (
    Capabilities,
    EngineReply,
    Outputs,
    TritonContract,
    TritonRequest,
    first_float,
    first_int,
    scalar,
    text_of,
)


def sampling_inputs(task: GenerationTask) -> dict[str, np.ndarray]:
    """TensorRT-LLM's sampling inputs. Greedy goes as top_k=1 at temperature 1: portable
    to engines that divide by the temperature."""
    greedy = task.temperature <= 0
    return {
        "text_input": scalar(task.prompt, np.object_),
        "max_tokens": scalar(task.max_tokens, np.int32),
        "temperature": scalar(1.0 if greedy else task.temperature, np.float32),
        "top_p": scalar(1.0 if greedy else task.top_p, np.float32),
        "top_k": scalar(1 if greedy else task.top_k, np.int32),
    }


def stop_words_input(task: GenerationTask) -> dict[str, np.ndarray]:
    return {"stop_words": np.array([task.stop_words], dtype=np.object_)} if task.stop_words else {}


def log_probs_of(outputs: Outputs, count: int | None) -> list[float] | None:
    """``output_log_probs`` of the first beam ([batch, beam, tokens] or [beam, tokens]), cut to
    ``count`` tokens when the engine pads it."""
    array = outputs.get("output_log_probs")
    if array is None:
        return None
    values = (
        array.reshape(-1, array.shape[-1])[0].astype(float).tolist()
        if array.ndim > 1
        else array.astype(float).tolist()
    )
    return values[:count] if count is not None else values


class NativeContract(TritonContract):
    name = "native"
    capabilities = Capabilities(finish_reason=True, token_counts=True, log_probs=True)

    def request(self, task: GenerationTask) -> TritonRequest:
        inputs = sampling_inputs(task)
        inputs["return_log_probs"] = scalar(True, np.bool_)
        inputs["exclude_input_in_output"] = scalar(True, np.bool_)
        if task.seed is not None:
            inputs["seed"] = scalar(task.seed, np.uint64)
        inputs.update(stop_words_input(task))
        outputs = (
            "text_output",
            "cum_log_probs",
            "output_log_probs",
            "num_input_tokens",
            "num_output_tokens",
            "finish_reason",
        )
        return TritonRequest(inputs, outputs)

    def reply(self, task: GenerationTask, responses: Sequence[Outputs]) -> EngineReply:
        [outputs] = responses
        count = first_int(outputs.get("num_output_tokens"))
        return EngineReply(
            text=text_of(outputs.get("text_output")),
            finish_reason=FinishReason(text_of(outputs.get("finish_reason"))),
            num_prompt_tokens=first_int(outputs.get("num_input_tokens")),
            num_output_tokens=count,
            token_log_probs=log_probs_of(outputs, count),
            cum_log_prob=first_float(outputs.get("cum_log_probs")),
        )
