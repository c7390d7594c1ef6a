"""Python values out of request tensors (numpy arrays), with errors that name the field.

Shared by every model's request parser; no Triton here (the Triton layer hands over
``{input name: numpy array}``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..kernel.params import InvalidParameter

Arrays = Mapping[str, np.ndarray]

MAX_JSON_BYTES = 65536
MAX_JSON_DEPTH = 32


def _decoded(name: str, value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as error:
            raise InvalidParameter(
                name, f"not valid UTF-8 ({error.reason} at byte {error.start})"
            ) from None
    return value.item() if isinstance(value, np.generic) else value


def one_value(arrays: Arrays, name: str) -> Any:
    """The single element of an input as a Python value (str for BYTES), or None when absent."""
    values = arrays.get(name)
    if values is None:
        return None
    flat = np.asarray(values).reshape(-1)
    if flat.size != 1:
        raise InvalidParameter(name, f"expected exactly one element, got {flat.size}")
    return _decoded(name, flat[0])


def all_values(arrays: Arrays, name: str) -> list[Any] | None:
    """Every element of an input, flattened, as Python values; None when absent."""
    values = arrays.get(name)
    if values is None:
        return None
    return [_decoded(name, value) for value in np.asarray(values).reshape(-1)]


def row_values(arrays: Arrays, name: str) -> list[list[Any]] | None:
    """Every row of an input (its first dimension is the batch), each flattened to Python
    values; None when absent. An input of fewer than two dimensions is one row."""
    values = arrays.get(name)
    if values is None:
        return None
    table = np.asarray(values)
    table = table.reshape(1, -1) if table.ndim < 2 else table.reshape(table.shape[0], -1)
    return [[_decoded(name, value) for value in row] for row in table]


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def json_object(name: str, text: str) -> dict[str, Any]:
    """A JSON object of bounded size and depth (a deep one must not reach the parser's
    recursion limit)."""
    size = len(text.encode())
    if size > MAX_JSON_BYTES:
        raise InvalidParameter(name, f"at most {MAX_JSON_BYTES} bytes of JSON, got {size}")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidParameter(name, f"not valid JSON: {error}") from None
    except RecursionError:
        raise InvalidParameter(name, f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    if not isinstance(value, dict):
        raise InvalidParameter(name, f"must be a JSON object, got {type(value).__name__}")
    if _depth(value) > MAX_JSON_DEPTH:
        raise InvalidParameter(name, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return value
