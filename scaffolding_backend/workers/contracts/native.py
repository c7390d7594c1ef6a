"""This project's ``generator`` model (``model_repository/generator/config.pbtxt``):
TensorRT-LLM's input names, plus the outputs TensorRT-LLM lacks: ``finish_reason``
and the token counts. Decoupled: one response, or one per token and a last one."""

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
    strings,
    text_of,
)
from .tensorrt_llm import log_probs_of


class NativeContract(TritonContract):
    name = "native"

    def capabilities_of(self, release: str) -> Capabilities:
        return Capabilities(
            decoupled=True,
            streams=True,
            finish_reason=True,
            token_counts=True,
            log_probs=True,
            stop_request=True,
        )

    def request(self, task: GenerationTask) -> TritonRequest:
        # optional inputs go only where they differ from the model's defaults: every tensor
        # costs shared memory and copies in both stubs and in the server, per sub-request
        inputs = {
            "text_input": scalar(task.prompt, np.object_),
            "max_tokens": scalar(task.max_tokens, np.int32),
            "temperature": scalar(task.temperature, np.float32),  # 0: greedy
            "exclude_input_in_output": scalar(True, np.bool_),
        }
        if task.top_p != 1.0:
            inputs["top_p"] = scalar(task.top_p, np.float32)
        if task.top_k:
            inputs["top_k"] = scalar(task.top_k, np.int32)
        if task.return_log_probs:
            inputs["return_log_probs"] = scalar(True, np.bool_)
        if self.streams_for(task):
            inputs["stream"] = scalar(True, np.bool_)
        if task.seed is not None:
            inputs["seed"] = scalar(task.seed, np.uint64)
        if task.stop_words:
            inputs["stop_words"] = strings(task.stop_words)
        outputs = ["text_output", "num_input_tokens", "num_output_tokens", "finish_reason"]
        if task.return_log_probs:
            outputs += ["output_log_probs", "cum_log_probs"]
        return TritonRequest(inputs, tuple(outputs))

    def reply(self, task: GenerationTask, responses: Sequence[Outputs]) -> EngineReply:
        """Streamed: a response per token (text, log-prob), then the final one with the finish
        reason and the counts; otherwise the final one carries everything."""
        final = responses[-1]
        count = first_int(final.get("num_output_tokens"))
        if len(responses) > 1:
            log_probs = [
                value for outputs in responses[:-1] for value in log_probs_of(outputs) or []
            ]
        else:
            log_probs = log_probs_of(final, count) or []
        return EngineReply(
            text="".join(text_of(outputs.get("text_output")) for outputs in responses),
            finish_reason=FinishReason(text_of(final.get("finish_reason"))),
            num_prompt_tokens=first_int(final.get("num_input_tokens")),
            num_output_tokens=count,
            token_log_probs=log_probs if task.return_log_probs else None,
            cum_log_prob=first_float(final.get("cum_log_probs")),
        )

    def chunk(self, outputs: Outputs) -> tuple[str, list[float]] | None:
        if "finish_reason" in outputs:  # the final response: counts, no new text
            return None
        return text_of(outputs.get("text_output")), log_probs_of(outputs) or []

    def is_last(self, outputs: Outputs) -> bool:
        # the generator sends its finish reason only in the response it ends the request with
        # (io.send_final)
        return "finish_reason" in outputs

    def stop_request(self) -> TritonRequest:
        inputs = {
            "text_input": scalar("", np.object_),
            "max_tokens": scalar(1, np.int32),
            "stop": scalar(True, np.bool_),
        }
        return TritonRequest(inputs, ("text_output",))
