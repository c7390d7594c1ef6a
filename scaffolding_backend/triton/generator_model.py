"""The ``generator`` model: a CPU Hugging Face causal LM behind this project's native
generation contract (``docs/ARCHITECTURE.md``: TensorRT-LLM's input names, plus the
``finish_reason`` and token-count outputs TensorRT-LLM lacks). Triton's dynamic batcher
hands ``execute`` several requests at once; they decode together in one engine call."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from ..engines.causal_lm import CausalLMEngine, GenerationRequest, GenerationResult
from ..kernel.params import InvalidParameter
from ..service.config import ConfigError, GeneratorConfig, resolve_model_dir
from ..service.values import Arrays, all_values, one_value
from . import io


class GeneratorModel:
    def initialize(self, args: dict[str, Any]) -> None:
        try:
            self.config = GeneratorConfig.from_model_config(json.loads(args["model_config"]))
            self.model_dir = resolve_model_dir(self.config.model_dir, args["model_repository"])
        except ConfigError as error:
            raise pb_utils.TritonModelException(f"{args['model_name']}: {error}") from None
        self.engine = CausalLMEngine(self.model_dir, num_threads=self.config.num_threads or None)
        pb_utils.Logger.log_info(f"generator: serving {self.model_dir} ({self.config})")

    def _number(self, arrays: Arrays, name: str, kind: type, default: Any) -> Any:
        value = one_value(arrays, name)
        return default if value is None else kind(value)

    def _parse(
        self, arrays: Arrays, _parameters: str
    ) -> tuple[list[GenerationRequest], tuple[bool, bool]]:
        prompts = all_values(arrays, "text_input")
        if not prompts:
            raise InvalidParameter("text_input", "is required")
        if any(not p for p in prompts):
            raise InvalidParameter("text_input", "must not be empty")
        if self._number(arrays, "stream", bool, False):
            raise InvalidParameter(
                "stream", "this CPU generator does not stream tokens; send stream=false"
            )
        max_tokens = self._number(arrays, "max_tokens", int, None)
        if max_tokens is None:
            raise InvalidParameter("max_tokens", "is required")
        cap = self.config.max_tokens_cap
        if not 1 <= max_tokens <= cap:
            raise InvalidParameter("max_tokens", f"must be between 1 and {cap}, got {max_tokens}")
        temperature = self._number(arrays, "temperature", float, 1.0)
        if not temperature >= 0:
            raise InvalidParameter("temperature", f"must be >= 0, got {temperature}")
        top_p = self._number(arrays, "top_p", float, 1.0)
        if not 0 < top_p <= 1:
            raise InvalidParameter("top_p", f"must be in (0, 1], got {top_p}")
        top_k = self._number(arrays, "top_k", int, 0)
        if top_k < 0:
            raise InvalidParameter("top_k", f"must be >= 0, got {top_k}")
        seed = self._number(arrays, "seed", int, None)
        if seed is None:
            seed = self._number(arrays, "random_seed", int, None)
        stop_words = [word for word in all_values(arrays, "stop_words") or [] if word]
        for prompt in prompts:
            length = self.engine.count_tokens(prompt)
            if self.engine.max_context and length + max_tokens > self.engine.max_context:
                raise InvalidParameter(
                    "text_input",
                    f"prompt of {length} tokens plus max_tokens={max_tokens} exceeds "
                    f"the model's context of {self.engine.max_context}",
                )
        requests = [
            GenerationRequest(
                prompt,
                max_tokens,
                temperature,
                top_p,
                top_k,
                None if seed is None else seed + row,
                stop_words,
            )
            for row, prompt in enumerate(prompts)
        ]
        return_log_probs = self._number(arrays, "return_log_probs", bool, False)
        exclude_input = self._number(arrays, "exclude_input_in_output", bool, False)
        return requests, (return_log_probs, exclude_input)

    @staticmethod
    def _response(
        rows: list[GenerationRequest], results: list[GenerationResult], options: tuple[bool, bool]
    ) -> Any:
        return_log_probs, exclude_input = options
        texts = [r.text if exclude_input else row.prompt + r.text for r, row in zip(results, rows)]
        longest = max(1, max(r.num_output_tokens for r in results))
        log_probs = np.zeros((len(results), 1, longest), dtype=np.float32)
        if return_log_probs:
            for row, result in enumerate(results):
                log_probs[row, 0, : result.num_output_tokens] = result.token_log_probs
        column = lambda values, dtype: np.array([[v] for v in values], dtype=dtype)
        outputs = [
            pb_utils.Tensor("text_output", column(texts, np.object_)),
            pb_utils.Tensor("cum_log_probs", column([r.cum_log_prob for r in results], np.float32)),
            pb_utils.Tensor("output_log_probs", log_probs),
            pb_utils.Tensor(
                "num_input_tokens", column([r.num_prompt_tokens for r in results], np.int32)
            ),
            pb_utils.Tensor(
                "num_output_tokens", column([r.num_output_tokens for r in results], np.int32)
            ),
            pb_utils.Tensor(
                "finish_reason", column([r.finish_reason for r in results], np.object_)
            ),
        ]
        return pb_utils.InferenceResponse(output_tensors=outputs)

    def execute(self, requests: list[Any]) -> list[Any]:
        return io.execute_batched(
            requests, self._parse, self.engine.generate, self._response, "generator"
        )
