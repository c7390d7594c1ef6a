"""Reading and validating request tensors in a Triton Python-backend model.

Every problem becomes :class:`InvalidInput` naming the field, which the model
turns into an INVALID_ARG error for that request alone.
"""

from __future__ import annotations

import json
from typing import Any

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
