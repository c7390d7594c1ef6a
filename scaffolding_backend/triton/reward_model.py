"""The ``reward`` models: a CPU PRM or ORM behind the reward contract
(``docs/ARCHITECTURE.md``).

``query`` + ``response`` (steps separated by the step delimiter) -> ``step_scores``
(one probability per step for a PRM, a single entry for an ORM), ``score`` (the
last step's, or the outcome's) and ``num_steps``. A request may carry several
rows; rows of different lengths pad ``step_scores`` with NaN, ``num_steps`` says
how many are real. The request parameters ``prompt_template`` and ``step_delimiter``
say how the caller's generator formats prompts and steps (the scaffolding model
sends its own), so the model scores exactly the text the generator wrote; without
them the default format applies. Triton's dynamic batcher groups requests; they run
as one batched forward pass.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from ..engines.reward_model import RewardEngine, RewardItem, RewardResult
from ..kernel.params import InvalidParameter
from ..kernel.prompts import PromptFormat
from ..service.config import ConfigError, RewardConfig, resolve_model_dir
from ..service.values import Arrays, all_values, json_object
from . import io


def prompt_format_of(parameters: str) -> PromptFormat:
    """The prompt format a caller names in its request parameters (the default otherwise)."""
    values = json_object("parameters", parameters or "{}")
    defaults = PromptFormat()
    template = values.get("prompt_template", defaults.template)
    delimiter = values.get("step_delimiter", defaults.step_delimiter)
    if not isinstance(template, str) or "{question}" not in template:
        raise InvalidParameter("prompt_template", "must be a string containing '{question}'")
    if not isinstance(delimiter, str) or not delimiter:
        raise InvalidParameter("step_delimiter", "must be a non-empty string")
    return PromptFormat(template, delimiter)


class RewardModel:
    def initialize(self, args: dict[str, Any]) -> None:
        try:
            self.config = RewardConfig.from_model_config(json.loads(args["model_config"]))
            model_dir = resolve_model_dir(self.config.model_dir, args["model_repository"])
        except ConfigError as error:
            raise pb_utils.TritonModelException(f"{args['model_name']}: {error}") from None
        self.engine = RewardEngine(
            model_dir, num_threads=self.config.num_threads or None, device=self.config.device
        )
        self.name = args["model_name"]
        pb_utils.Logger.log_info(
            f"{self.name}: serving {self.engine.kind.upper()} ({self.engine.scorer}) "
            f"{model_dir} on {self.config.device}"
        )

    def _parse(self, arrays: Arrays, parameters: str) -> tuple[list[RewardItem], None]:
        queries = all_values(arrays, "query")
        responses = all_values(arrays, "response")
        if not queries:
            raise InvalidParameter("query", "is required")
        if responses is None:
            raise InvalidParameter("response", "is required")
        if len(queries) != len(responses):
            raise InvalidParameter(
                "response", f"has {len(responses)} rows but query has {len(queries)}"
            )
        if len(queries) > self.config.max_rows_per_request:
            limit = self.config.max_rows_per_request
            raise InvalidParameter("query", f"at most {limit} rows per request, got {len(queries)}")
        if any(not q.strip() for q in queries):
            raise InvalidParameter("query", "must not be empty")
        prompt_format = prompt_format_of(parameters)
        return [RewardItem(q, r, prompt_format) for q, r in zip(queries, responses)], None

    @staticmethod
    def _response(_items: list[RewardItem], results: list[RewardResult], _options: None) -> Any:
        width = max(1, max(len(r.step_scores) for r in results))
        step_scores = np.full((len(results), width), np.nan, dtype=np.float32)
        for row, result in enumerate(results):
            step_scores[row, : len(result.step_scores)] = result.step_scores
        return pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor("step_scores", step_scores),
                pb_utils.Tensor("score", np.array([[r.score] for r in results], dtype=np.float32)),
                pb_utils.Tensor(
                    "num_steps", np.array([[len(r.step_scores)] for r in results], dtype=np.int32)
                ),
            ]
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        return io.execute_batched(
            requests, self._parse, self.engine.score, self._response, self.name
        )
