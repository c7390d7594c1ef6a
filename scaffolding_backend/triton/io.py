"""Between Triton's Python-backend objects and plain Python: input tensors out of a
request, error responses, and the ``execute`` of a dynamically batched model.

Every refusal is an :class:`InvalidParameter` naming the field, which becomes an
INVALID_ARG error for that request alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from ..kernel.params import InvalidParameter


def input_arrays(request: Any) -> dict[str, np.ndarray]:
    """Every input the request carries, by name."""
    return {tensor.name(): tensor.as_numpy() for tensor in request.inputs()}


def string_tensor(name: str, values: Sequence[str]) -> Any:
    return pb_utils.Tensor(name, np.array(values, dtype=np.object_))


def error_response(error: Exception, code: int | None = None) -> Any:
    code = pb_utils.TritonError.INVALID_ARG if code is None else code
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(error), code))


def execute_batched(
    requests: Sequence[Any],
    parse: Callable[[dict[str, np.ndarray], str], tuple[list, Any]],
    run: Callable[[list], list],
    respond: Callable[[list, list, Any], Any],
    model_name: str,
) -> list:
    """The batched-model ``execute``: every request is parsed on its own (a bad one gets
    its INVALID_ARG error alone), the rows of all good ones go through ONE engine call,
    and each request gets its slice back. ``parse(arrays, request parameters) -> (rows, options)``,
    ``run(rows) -> results``, ``respond(rows, results, options) -> response``."""
    responses: list = [None] * len(requests)
    parsed: dict[int, tuple[list, Any]] = {}
    for index, request in enumerate(requests):
        try:
            parsed[index] = parse(input_arrays(request), request.parameters())
        except InvalidParameter as error:
            responses[index] = error_response(error)
    try:
        results = run([row for rows, _ in parsed.values() for row in rows])
    except Exception as error:  # report to every request of the batch; keep serving
        pb_utils.Logger.log_error(
            f"{model_name}: batch of {len(parsed)} requests failed: {error!r}"
        )
        for index in parsed:
            responses[index] = error_response(error, pb_utils.TritonError.INTERNAL)
        return responses
    position = 0
    for index, (rows, options) in parsed.items():
        responses[index] = respond(rows, results[position : position + len(rows)], options)
        position += len(rows)
    return responses
