"""TensorRT-LLM's ``ensemble`` and ``tensorrt_llm_bls`` models (the inflight_batcher_llm
model repository: triton-inference-server/tensorrtllm_backend ``all_models/`` up to
v0.19.0, NVIDIA/TensorRT-LLM ``triton_backend/all_models/`` since).

Both take the same inputs. What changes with the release:

* ``v0.14`` (v0.14-v0.15, the NGC 24.10/24.11 images): seed input ``random_seed``; no
  ``exclude_input_in_output`` input (the server's ``tensorrt_llm`` config decides whether
  the prompt, re-decoded from its tokens, comes back in front of the text);
* ``v0.16`` (v0.16-v0.19): ``exclude_input_in_output`` becomes an input;
* ``current``: the seed input is ``seed``, and ``return_num_input_tokens`` /
  ``return_num_output_tokens`` ask for the token counts.

No release returns a finish reason, and the stop word stays in the text; token counts
come from ``output_log_probs`` before ``current``. A decoupled deployment
(``decoupled_mode: true``) answers with one or more responses, each with the text of the
tokens since the previous one when streaming (the BLS model always streams when
decoupled), then a final flag (the BLS model sends it in an empty response of its own).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...kernel.tasks import GenerationTask
from .base import (
    Capabilities,
    EngineReply,
    Outputs,
    TritonContract,
    TritonRequest,
    first_float,
    first_int,
    scalar,
    strings,
    text_of,
)


def sampling_inputs(
    task: GenerationTask, *, prefix: str = "", batched: bool = True
) -> dict[str, np.ndarray]:
    """TensorRT-LLM's sampling inputs. Greedy goes as top_k=1 at temperature 1: portable
    to engines that divide by the temperature."""
    greedy = task.temperature <= 0
    return {
        f"{prefix}temperature": scalar(
            1.0 if greedy else task.temperature, np.float32, batched=batched
        ),
        f"{prefix}top_p": scalar(1.0 if greedy else task.top_p, np.float32, batched=batched),
        f"{prefix}top_k": scalar(1 if greedy else task.top_k, np.int32, batched=batched),
    }


def log_probs_of(outputs: Outputs, count: int | None = None) -> list[float] | None:
    """``output_log_probs`` of the first beam ([batch, beam, tokens] or [beam, tokens]), cut to
    ``count`` tokens when the engine pads it."""
    array = outputs.get("output_log_probs")
    if array is None:
        return None
    values = array.reshape(-1, array.shape[-1])[0] if array.ndim > 1 else array
    return (
        values[:count].astype(float).tolist()
        if count is not None
        else values.astype(float).tolist()
    )


class TensorRTLLMContract(TritonContract):
    name = "trtllm"
    releases = ("current", "v0.16", "v0.14")

    def capabilities_of(self, release: str) -> Capabilities:
        return Capabilities(
            streams=True,
            token_counts=release == "current",
            log_probs=True,
            excludes_prompt=release != "v0.14",
        )

    def request(self, task: GenerationTask) -> TritonRequest:
        inputs = {
            "text_input": scalar(task.prompt, np.object_),
            "max_tokens": scalar(task.max_tokens, np.int32),
            **sampling_inputs(task),
            # log-probs give the output token count where the release has no count of its own
            "return_log_probs": scalar(True, np.bool_),
        }
        if task.seed is not None:
            inputs["seed" if self.release == "current" else "random_seed"] = scalar(
                task.seed, np.uint64
            )
        if task.stop_words:
            inputs["stop_words"] = strings(task.stop_words)
        if self.capabilities.excludes_prompt:
            inputs["exclude_input_in_output"] = scalar(True, np.bool_)
        outputs = ["text_output", "cum_log_probs", "output_log_probs"]
        if self.capabilities.token_counts:
            inputs["return_num_input_tokens"] = scalar(True, np.bool_)
            inputs["return_num_output_tokens"] = scalar(True, np.bool_)
            outputs += ["num_input_tokens", "num_output_tokens"]
        if self.decoupled:
            inputs["stream"] = scalar(self.streams_for(task), np.bool_)
        return TritonRequest(inputs, tuple(outputs))

    def reply(self, task: GenerationTask, responses: Sequence[Outputs]) -> EngineReply:
        """One response, or (decoupled, streaming) one per chunk: the texts, log-probs and
        counts of the chunks add up; the cumulative log-prob is the last one's."""
        counts = [first_int(outputs.get("num_output_tokens")) for outputs in responses]
        log_probs = [log_probs_of(outputs, count) for outputs, count in zip(responses, counts)]
        return EngineReply(
            text="".join(text_of(outputs.get("text_output")) for outputs in responses),
            # only a whole (non-streamed) text can carry the prompt, when the server echoes it
            may_echo_prompt=not self.capabilities.excludes_prompt and len(responses) == 1,
            num_prompt_tokens=first_int(responses[0].get("num_input_tokens")),
            num_output_tokens=None if None in counts else sum(c for c in counts if c is not None),
            token_log_probs=None
            if any(chunk is None for chunk in log_probs)
            else [value for chunk in log_probs for value in chunk or []],
            cum_log_prob=first_float(responses[-1].get("cum_log_probs")),
        )

    def chunk(self, outputs: Outputs) -> tuple[str, list[float]] | None:
        return text_of(outputs.get("text_output")), log_probs_of(outputs) or []


class TensorRTLLMBLSContract(TensorRTLLMContract):
    """``tensorrt_llm_bls``: the ensemble's inputs, served by a Python BLS model."""

    name = "trtllm_bls"
