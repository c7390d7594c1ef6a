"""One scaffolding request, parsed and validated in one place, with no Triton in sight.

The Triton model hands over the request's input tensors (as numpy arrays) and its
request parameters (Triton's JSON string); :func:`parse_job` returns a typed
:class:`Job` or raises :class:`~scaffolding_backend.kernel.params.InvalidParameter`
naming the field.

Where the options come from, strongest first:

1. a tensor of their own (``method``, ``seed``, ``deadline_s``, ``stream``);
2. the ``method_parameters`` tensor, a JSON object of method knobs and request options;
3. Triton request parameters (``parameters`` in a KServe v2 JSON body or in the body
   of the ``generate`` extension, gRPC ``InferParameter``), the same keys.

Request options (``method``, ``seed``, ``deadline_s``, ``stream``, ``stream_tokens``,
``reward_model``) are taken out; every other key is a knob of the chosen method.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..controllers import METHODS
from ..kernel.controller import Controller
from ..kernel.params import InvalidParameter, MethodParams, build_params, coerce
from .config import ScaffoldingConfig
from .values import Arrays, json_object, one_value

MAX_SEED = 2**64 - 1  # the generator's seed input is UINT64


@dataclass(frozen=True)
class Job:
    question: str
    method: str
    params: MethodParams
    seed: int
    deadline_s: float
    stream: bool
    reward_model: str
    stream_tokens: bool = False

    def controller(self, config: ScaffoldingConfig) -> Controller:
        return METHODS[self.method](self.params, config.prompt_format)


class _Options:
    """The merged options; each request option is taken out once, typed."""

    def __init__(self, tensors: Arrays, request_parameters: str | Mapping[str, Any] | None):
        self.tensors = tensors
        merged: dict[str, Any] = {}
        if isinstance(request_parameters, str):
            merged.update(json_object("parameters", request_parameters or "{}"))
        elif request_parameters:
            merged.update(request_parameters)
        method_parameters = one_value(tensors, "method_parameters")
        if method_parameters is not None:
            merged.update(json_object("method_parameters", method_parameters))
        self.values = merged

    def take(self, name: str, kind: type, default: Any) -> Any:
        from_tensor = one_value(self.tensors, name)
        from_options = self.values.pop(name, None)
        value = from_tensor if from_tensor is not None else from_options
        return default if value is None else coerce(name, value, kind)


def parse_job(
    tensors: Arrays,
    request_parameters: str | Mapping[str, Any] | None,
    config: ScaffoldingConfig,
    *,
    decoupled: bool,
) -> Job:
    question = one_value(tensors, "text_input")
    if not isinstance(question, str) or not question.strip():
        raise InvalidParameter("text_input", "a non-empty question is required")
    if len(question) > config.max_question_chars:
        limit = config.max_question_chars
        raise InvalidParameter("text_input", f"at most {limit} characters, got {len(question)}")
    options = _Options(tensors, request_parameters)
    method = options.take("method", str, config.default_method)
    if method not in METHODS:
        raise InvalidParameter(
            "method", f"unknown method {method!r}; available: {', '.join(sorted(METHODS))}"
        )
    seed = _seed(options)
    deadline_s = options.take("deadline_s", float, config.default_deadline_s)
    if not 0 < deadline_s <= config.max_deadline_s:
        raise InvalidParameter(
            "deadline_s", f"must be in (0, {config.max_deadline_s}] seconds, got {deadline_s}"
        )
    stream = options.take("stream", bool, False)
    if stream and not decoupled:
        raise InvalidParameter(
            "stream", "progress streaming needs the decoupled 'scaffolding' model (gRPC streaming)"
        )
    stream_tokens = options.take("stream_tokens", bool, False)
    if stream_tokens and not stream:
        raise InvalidParameter("stream_tokens", "needs stream: true (the tokens are events)")
    reward_model = options.take("reward_model", str, config.reward_model)
    if reward_model not in config.allowed_reward_models:
        raise InvalidParameter(
            "reward_model",
            f"must be one of {sorted(config.allowed_reward_models)}, got {reward_model!r}",
        )
    params = build_params(METHODS[method].Params, options.values, config.caps)
    return Job(question, method, params, seed, deadline_s, stream, reward_model, stream_tokens)


def _seed(options: _Options) -> int:
    value = one_value(options.tensors, "seed")
    if value is None:
        value = options.values.pop("seed", 0)
    else:
        options.values.pop("seed", None)
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            value = int(value)
        else:
            raise InvalidParameter("seed", f"expected an integer, got {value!r}")
    if not 0 <= value <= MAX_SEED:
        raise InvalidParameter("seed", f"must be in [0, 2**64 - 1], got {value}")
    return value
