"""TensorRT-LLM's LLM-API Triton model (NVIDIA/TensorRT-LLM
``triton_backend/all_models/llmapi/tensorrt_llm``): ``text_input`` STRING [-1],
``streaming``, ``sampling_param_*`` inputs, and a finish reason and stop reason that
come back as strings (``"None"`` before the end). No token counts and no per-token
log-probs; the cumulative log-prob comes back as a string. Its ``model.yaml`` decides
``max_batch_size`` (default 0: no batch dimension) and whether it is decoupled (default
no). Streamed responses carry the whole text so far. A ``stop`` request with the same
request id aborts a request in flight.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...kernel.tasks import FinishReason, GenerationTask
from .base import (
    Capabilities,
    ContractError,
    EngineReply,
    Outputs,
    TritonContract,
    TritonRequest,
    first_float,
    scalar,
    strings,
    text_of,
)
from .tensorrt_llm import sampling_inputs

UNBATCHED = {"batched": False}  # max_batch_size 0: inputs carry no batch dimension


class LLMAPIContract(TritonContract):
    name = "trtllm_llmapi"

    def capabilities_of(self, release: str) -> Capabilities:
        return Capabilities(streams=True, finish_reason=True, stop_request=True)

    def request(self, task: GenerationTask) -> TritonRequest:
        inputs = {
            "text_input": strings([task.prompt], **UNBATCHED),
            "sampling_param_max_tokens": scalar(task.max_tokens, np.int32, **UNBATCHED),
            **sampling_inputs(task, prefix="sampling_param_", **UNBATCHED),
            "sampling_param_exclude_input_from_output": scalar(True, np.bool_, **UNBATCHED),
            "return_finish_reason": scalar(True, np.bool_, **UNBATCHED),
            "return_stop_reason": scalar(True, np.bool_, **UNBATCHED),
            "return_cumulative_logprob": scalar(True, np.bool_, **UNBATCHED),
        }
        if task.seed is not None:
            inputs["sampling_param_seed"] = scalar(task.seed, np.uint64, **UNBATCHED)
        if task.stop_words:
            inputs["sampling_param_stop"] = strings(task.stop_words, **UNBATCHED)
        if self.decoupled:
            inputs["streaming"] = scalar(self.streams_for(task), np.bool_, **UNBATCHED)
        outputs = ("text_output", "finish_reason", "stop_reason", "cumulative_logprob")
        return TritonRequest(inputs, outputs)

    def reply(self, task: GenerationTask, responses: Sequence[Outputs]) -> EngineReply:
        last = responses[-1]  # streamed texts are cumulative: the last one is the whole text
        reason = text_of(last.get("finish_reason"))
        stop_reason = text_of(last.get("stop_reason"))
        if reason in ("cancelled", "timeout"):
            raise ContractError(f"the engine ended the generation: {reason}")
        finish_reason = {
            "length": FinishReason.LENGTH,
            "stop": FinishReason.STOP_WORD if stop_reason in task.stop_words else FinishReason.EOS,
        }.get(reason)
        return EngineReply(
            text=text_of(last.get("text_output")),
            finish_reason=finish_reason,
            stop_word=stop_reason if finish_reason is FinishReason.STOP_WORD else None,
            cum_log_prob=first_float(last.get("cumulative_logprob")),
        )

    def stop_request(self) -> TritonRequest:
        inputs = {
            "text_input": strings([""], **UNBATCHED),
            "stop": scalar(True, np.bool_, **UNBATCHED),
        }
        return TritonRequest(inputs, ("text_output",))
