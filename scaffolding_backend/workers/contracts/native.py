"""This project's ``generator`` model (``model_repository/generator/config.pbtxt``):
TensorRT-LLM's input names, plus the outputs TensorRT-LLM lacks: ``finish_reason``
and the token counts. Decoupled: one response, or one per token and a last one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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
            batches=True,
        )

    def request(self, task: GenerationTask) -> TritonRequest:
        return self._rows([task], stream=self.streams_for(task))

    def batch_request(self, tasks: Sequence[GenerationTask]) -> TritonRequest:
        # the generator takes per-row sampling inputs as [B, 1]; the flags that decide how
        # the request is answered must agree across rows (the worker folds only such tasks)
        if len({task.return_log_probs for task in tasks}) > 1:
            raise ValueError("tasks folded into one request must agree on return_log_probs")
        return self._rows(tasks, stream=False)

    @staticmethod
    def _rows(tasks: Sequence[GenerationTask], *, stream: bool) -> TritonRequest:
        def column(values: list, dtype: Any) -> np.ndarray:
            return np.array([[value] for value in values], dtype=dtype)

        # optional inputs go only where a row differs from the model's defaults: every tensor
        # costs shared memory and copies in both stubs and in the server, per sub-request
        inputs = {
            "text_input": column([task.prompt for task in tasks], np.object_),
            "max_tokens": column([task.max_tokens for task in tasks], np.int32),
            "temperature": column([task.temperature for task in tasks], np.float32),  # 0: greedy
            "exclude_input_in_output": column([True] * len(tasks), np.bool_),
        }
        if any(task.top_p != 1.0 for task in tasks):
            inputs["top_p"] = column([task.top_p for task in tasks], np.float32)
        if any(task.top_k for task in tasks):
            inputs["top_k"] = column([task.top_k for task in tasks], np.int32)
        log_probs = tasks[0].return_log_probs
        if log_probs:
            inputs["return_log_probs"] = column([True] * len(tasks), np.bool_)
        if stream:
            inputs["stream"] = scalar(True, np.bool_)
        if any(task.seed is not None for task in tasks):
            # a row without a seed is greedy (the runtime seeds every sampled task)
            inputs["seed"] = column([task.seed or 0 for task in tasks], np.uint64)
        if any(task.stop_words for task in tasks):
            # [B, N]: rows with fewer words are padded with empty ones, which mean none
            width = max(len(task.stop_words) for task in tasks)
            padded = [task.stop_words + [""] * (width - len(task.stop_words)) for task in tasks]
            inputs["stop_words"] = np.array(padded, dtype=np.object_)
        outputs = ["text_output", "num_input_tokens", "num_output_tokens", "finish_reason"]
        if log_probs:
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
