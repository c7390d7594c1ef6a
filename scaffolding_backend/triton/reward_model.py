"""The ``reward`` models: a CPU PRM or ORM behind the reward contract (see DESIGN.md).

``query`` + ``response`` (steps separated by a blank line) -> ``step_scores``
(one probability per step for a PRM, a single entry for an ORM), ``score`` (the
last step's, or the outcome's) and ``num_steps``. A request may carry several
rows; rows of different lengths pad ``step_scores`` with NaN, ``num_steps`` says
how many are real. Triton's dynamic batcher groups requests; they run as one
batched forward pass.
"""

from __future__ import annotations

import json

import numpy as np
import triton_python_backend_utils as pb_utils

from ..engines.reward_model import RewardEngine, RewardResult
from . import inputs
from .generator_model import resolve_model_dir
from .inputs import InvalidInput


class RewardModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        parameters = inputs.model_parameters(config)
        model_dir = resolve_model_dir(parameters, args["model_repository"], env_override=None)
        threads = int(parameters.get("num_threads", "0") or 0)
        self.engine = RewardEngine(model_dir, num_threads=threads or None)
        self.max_rows = int(parameters.get("max_rows_per_request", 256))
        self.name = args["model_name"]
        pb_utils.Logger.log_info(f"{args['model_name']}: serving {self.engine.kind.upper()} ({self.engine.scorer}) {model_dir}")

    def _parse(self, request) -> tuple[list[tuple[str, str]], None]:
        queries = inputs.strings(request, "query")
        responses = inputs.strings(request, "response")
        if not queries:
            raise InvalidInput("query", "is required")
        if responses is None:
            raise InvalidInput("response", "is required")
        if len(queries) != len(responses):
            raise InvalidInput("response", f"has {len(responses)} rows but query has {len(queries)}")
        if len(queries) > self.max_rows:
            raise InvalidInput("query", f"at most {self.max_rows} rows per request, got {len(queries)}")
        if any(not q.strip() for q in queries):
            raise InvalidInput("query", "must not be empty")
        return list(zip(queries, responses)), None

    @staticmethod
    def _response(_items, results: list[RewardResult], _options):
        width = max(1, max(len(r.step_scores) for r in results))
        step_scores = np.full((len(results), width), np.nan, dtype=np.float32)
        for row, result in enumerate(results):
            step_scores[row, : len(result.step_scores)] = result.step_scores
        return pb_utils.InferenceResponse(output_tensors=[
            pb_utils.Tensor("step_scores", step_scores),
            pb_utils.Tensor("score", np.array([[r.score] for r in results], dtype=np.float32)),
            pb_utils.Tensor("num_steps", np.array([[len(r.step_scores)] for r in results], dtype=np.int32)),
        ])

    def execute(self, requests):
        return inputs.execute_batched(requests, self._parse, self.engine.score, self._response, self.name)
