"""Reading and validating request tensors in a Triton Python-backend model.

Every problem becomes :class:`InvalidInput` naming the field, which the model
turns into an INVALID_ARG error for that request alone.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Sequence

import numpy as np
import triton_python_backend_utils as pb_utils

from ..core.params import InvalidParameter

InvalidInput = InvalidParameter


def invalid_arg(message: str) -> "pb_utils.TritonError":
    return pb_utils.TritonError(message, pb_utils.TritonError.INVALID_ARG)


def error_response(error: Exception, code: int | None = None) -> "pb_utils.InferenceResponse":
    code = pb_utils.TritonError.INVALID_ARG if code is None else code
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(error), code))


def array(request, name: str) -> np.ndarray | None:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


def decode(value: Any) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ValueError(f"not valid UTF-8 ({error})") from None
    return str(value)


def strings(request, name: str) -> list[str] | None:
    values = array(request, name)
    if values is None:
        return None
    try:
        return [decode(v) for v in values.reshape(-1)]
    except ValueError as error:
        raise InvalidInput(name, str(error)) from None


def one_string(request, name: str, default: str | None = None) -> str | None:
    values = strings(request, name)
    if values is None:
        return default
    if len(values) != 1:
        raise InvalidInput(name, f"expected exactly one element, got {len(values)}")
    return values[0]


def one_scalar(request, name: str, kind: type, default=None):
    values = array(request, name)
    if values is None:
        return default
    flat = values.reshape(-1)
    if flat.size != 1:
        raise InvalidInput(name, f"expected exactly one element, got {flat.size}")
    return kind(flat[0].item())


def request_parameters(request) -> dict[str, Any]:
    """Triton request parameters (``parameters`` in KServe v2 JSON, gRPC InferParameter)."""
    raw = request.parameters() if hasattr(request, "parameters") else "{}"
    try:
        parsed = json.loads(raw or "{}")
    except json.JSONDecodeError as error:
        raise InvalidInput("parameters", f"request parameters are not JSON: {error}") from None
    return parsed if isinstance(parsed, dict) else {}


def model_parameters(model_config: dict) -> dict[str, str]:
    return {key: value["string_value"] for key, value in model_config.get("parameters", {}).items()}


def execute_batched(
    requests: Sequence,
    parse: Callable[[Any], tuple[list, Any]],
    run: Callable[[list], list],
    respond: Callable[[list, list, Any], Any],
    model_name: str,
) -> list:
    """The batched-model ``execute``: every request is parsed on its own (a bad one gets
    its INVALID_ARG error alone), the rows of all good ones go through ONE engine call,
    and each request gets its slice back. ``parse(request) -> (rows, options)``,
    ``run(rows) -> results``, ``respond(rows, results, options) -> response``."""
    responses: list = [None] * len(requests)
    parsed: dict[int, tuple[list, Any]] = {}
    for index, request in enumerate(requests):
        try:
            parsed[index] = parse(request)
        except InvalidInput as error:
            responses[index] = error_response(error)
    try:
        results = run([row for rows, _ in parsed.values() for row in rows])
    except Exception as error:  # report to every request of the batch; keep serving
        pb_utils.Logger.log_error(f"{model_name}: batch of {len(parsed)} requests failed: {error!r}")
        for index in parsed:
            responses[index] = error_response(error, pb_utils.TritonError.INTERNAL)
        return responses
    position = 0
    for index, (rows, options) in parsed.items():
        responses[index] = respond(rows, results[position : position + len(rows)], options)
        position += len(rows)
    return responses
