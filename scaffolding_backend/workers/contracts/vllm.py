"""Triton's vLLM backend (triton-inference-server/vllm_backend ``src/model.py``, whose
``auto_complete_config`` declares the contract): always decoupled, no batch dimension,
``text_input``, ``stream``, ``exclude_input_in_output`` and every sampling option in the
``sampling_parameters`` JSON string.

* ``r24.10`` (the NGC 24.10 image): only ``text_output`` comes back;
* ``current`` (r24.12 on): ``return_finish_reason`` (``stop``, ``length``, ``abort``),
  ``return_cumulative_logprob``, ``return_num_input_tokens`` and
  ``return_num_output_tokens`` (per response: the tokens added since the previous one).

vLLM keeps stop strings out of the text unless told otherwise, and its ``stop`` reason
does not say whether a stop string or the end of the text ended it, so the adapter asks
for the stop string in the text (``include_stop_str_in_output``). Streamed responses
carry the new text only.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

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
    first_int,
    scalar,
    strings,
    text_of,
)

UNBATCHED = {"batched": False}


class VLLMContract(TritonContract):
    name = "vllm"
    releases = ("current", "r24.10")

    def capabilities_of(self, release: str) -> Capabilities:
        current = release == "current"
        return Capabilities(
            decoupled=True,
            streams=True,
            finish_reason=current,
            token_counts=current,
            samples_per_request=64,
        )

    def request(self, task: GenerationTask) -> TritonRequest:
        greedy = task.temperature <= 0
        sampling: dict[str, Any] = {
            "max_tokens": task.max_tokens,  # vLLM's default is 16
            "temperature": 1.0 if greedy else task.temperature,
            "top_p": 1.0 if greedy else task.top_p,
            "top_k": 1 if greedy else (task.top_k or -1),  # vLLM: -1 is "no top-k"
        }
        if task.seed is not None:
            sampling["seed"] = task.seed
        if task.stop_words:
            sampling |= {"stop": task.stop_words, "include_stop_str_in_output": True}
        inputs = {
            "text_input": strings([task.prompt], **UNBATCHED),
            "stream": scalar(self.streams_for(task), np.bool_, **UNBATCHED),
            "exclude_input_in_output": scalar(True, np.bool_, **UNBATCHED),
            "sampling_parameters": strings([json.dumps(sampling)], **UNBATCHED),
        }
        outputs = ["text_output"]
        if self.release == "current":
            for flag in (
                "finish_reason",
                "cumulative_logprob",
                "num_input_tokens",
                "num_output_tokens",
            ):
                inputs[f"return_{flag}"] = scalar(True, np.bool_, **UNBATCHED)
                outputs.append(flag)
        return TritonRequest(inputs, tuple(outputs))

    def chunk(self, outputs: Outputs) -> tuple[str, list[float]] | None:
        return text_of(outputs.get("text_output")), []  # no per-token log-probs asked for

    def reply(self, task: GenerationTask, responses: Sequence[Outputs]) -> EngineReply:
        reason = text_of(responses[-1].get("finish_reason"))
        if reason in ("abort", "error"):
            raise ContractError(f"the engine ended the generation: {reason}")
        counts = [first_int(outputs.get("num_output_tokens")) for outputs in responses]
        return EngineReply(
            text="".join(text_of(outputs.get("text_output")) for outputs in responses),
            # "stop" may be the end of the text or a stop string (kept in the text, see above)
            finish_reason=FinishReason.LENGTH if reason == "length" else None,
            num_prompt_tokens=first_int(responses[0].get("num_input_tokens")),
            num_output_tokens=None if None in counts else sum(c for c in counts if c is not None),
            cum_log_prob=first_float(responses[-1].get("cumulative_logprob")),
        )
