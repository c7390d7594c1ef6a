"""The ``generator`` model: a CPU Hugging Face causal LM behind the TensorRT-LLM
generation contract (see DESIGN.md). Triton's dynamic batcher hands ``execute``
several requests at once; they decode together in one batched engine call."""

from __future__ import annotations

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils

from ..engines.causal_lm import CausalLMEngine, GenerationRequest, GenerationResult
from . import inputs
from .inputs import InvalidInput

DEFAULT_MAX_TOKENS_CAP = 1024


def resolve_model_dir(parameters: dict[str, str], model_repository: str, env_override: str | None = "SCAFFOLDING_GENERATOR_DIR") -> str:
    """The model directory from the config parameter ``model_dir`` (or the launcher's override)."""
    path = (os.environ.get(env_override) if env_override else None) or parameters.get("model_dir", "")
    if not path:
        raise pb_utils.TritonModelException(f"{model_repository}: config parameter 'model_dir' is not set")
    if not os.path.isabs(path):
        # relative paths are relative to the repository checkout (model_repository's parent)
        path = os.path.normpath(os.path.join(model_repository, "..", "..", path))
    if not os.path.isdir(path):
        raise pb_utils.TritonModelException(f"{model_repository}: model directory {path!r} does not exist")
    return path


class GeneratorModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        parameters = inputs.model_parameters(config)
        self.model_dir = resolve_model_dir(parameters, args["model_repository"])
        self.max_tokens_cap = int(parameters.get("max_tokens_cap", DEFAULT_MAX_TOKENS_CAP))
        threads = int(parameters.get("num_threads", "0") or 0)
        self.engine = CausalLMEngine(self.model_dir, num_threads=threads or None)
        pb_utils.Logger.log_info(f"generator: serving {self.model_dir} (max_tokens cap {self.max_tokens_cap})")

    def _parse(self, request) -> tuple[list[GenerationRequest], tuple[bool, bool]]:
        prompts = inputs.strings(request, "text_input")
        if not prompts:
            raise InvalidInput("text_input", "is required")
        if any(not p for p in prompts):
            raise InvalidInput("text_input", "must not be empty")
        if inputs.one_scalar(request, "stream", bool, False):
            raise InvalidInput("stream", "this CPU generator does not stream tokens; send stream=false")
        max_tokens = inputs.one_scalar(request, "max_tokens", int)
        if max_tokens is None:
            raise InvalidInput("max_tokens", "is required")
        if not 1 <= max_tokens <= self.max_tokens_cap:
            raise InvalidInput("max_tokens", f"must be between 1 and {self.max_tokens_cap}, got {max_tokens}")
        temperature = inputs.one_scalar(request, "temperature", float, 1.0)
        if not temperature >= 0:
            raise InvalidInput("temperature", f"must be >= 0, got {temperature}")
        top_p = inputs.one_scalar(request, "top_p", float, 1.0)
        if not 0 < top_p <= 1:
            raise InvalidInput("top_p", f"must be in (0, 1], got {top_p}")
        top_k = inputs.one_scalar(request, "top_k", int, 0)
        if top_k < 0:
            raise InvalidInput("top_k", f"must be >= 0, got {top_k}")
        seed = inputs.one_scalar(request, "seed", int, None)
        if seed is None:
            seed = inputs.one_scalar(request, "random_seed", int, None)
        stop_words = [w for w in (inputs.strings(request, "stop_words") or []) if w]
        for prompt in prompts:
            length = self.engine.count_tokens(prompt)
            if self.engine.max_context and length + max_tokens > self.engine.max_context:
                raise InvalidInput(
                    "text_input",
                    f"prompt of {length} tokens plus max_tokens={max_tokens} exceeds the model's context of {self.engine.max_context}",
                )
        requests = [
            GenerationRequest(prompt, max_tokens, temperature, top_p, top_k, None if seed is None else seed + row, stop_words)
            for row, prompt in enumerate(prompts)
        ]
        return_log_probs = inputs.one_scalar(request, "return_log_probs", bool, False)
        exclude_input = inputs.one_scalar(request, "exclude_input_in_output", bool, False)
        return requests, (return_log_probs, exclude_input)

    @staticmethod
    def _response(rows: list[GenerationRequest], results: list[GenerationResult], options: tuple[bool, bool]):
        return_log_probs, exclude_input = options
        texts = [r.text if exclude_input else row.prompt + r.text for r, row in zip(results, rows)]
        longest = max(1, max(r.num_output_tokens for r in results))
        log_probs = np.zeros((len(results), 1, longest), dtype=np.float32)
        if return_log_probs:
            for row, result in enumerate(results):
                log_probs[row, 0, : result.num_output_tokens] = result.token_log_probs
        outputs = [
            pb_utils.Tensor("text_output", np.array([[t] for t in texts], dtype=np.object_)),
            pb_utils.Tensor("cum_log_probs", np.array([[r.cum_log_prob] for r in results], dtype=np.float32)),
            pb_utils.Tensor("output_log_probs", log_probs),
            pb_utils.Tensor("num_input_tokens", np.array([[r.num_prompt_tokens] for r in results], dtype=np.int32)),
            pb_utils.Tensor("num_output_tokens", np.array([[r.num_output_tokens] for r in results], dtype=np.int32)),
            pb_utils.Tensor("finish_reason", np.array([[r.finish_reason] for r in results], dtype=np.object_)),
        ]
        return pb_utils.InferenceResponse(output_tensors=outputs)

    def execute(self, requests):
        return inputs.execute_batched(requests, self._parse, self.engine.generate, self._response, "generator")
