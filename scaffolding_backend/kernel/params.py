"""Method knobs: one dataclass per method, built from a request's JSON parameters.

Unknown names and wrong types are refused with the field named, and the
server's caps (samples, tokens, steps) are enforced here, once for every method.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

INVALID_INPUT = "invalid input"  # how a model's refusal begins, so that callers can tell


class InvalidParameter(ValueError):
    """A value a client sent is refused; ``field`` names what it sent."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class Caps:
    """Server-side limits every request is held to (from the scaffolding model's config)."""

    max_samples: int  # any knob that multiplies generations (samples, beam width, iterations, ...)
    max_tokens: int  # per generation
    max_steps: int  # depth of step-wise search


@dataclass
class MethodParams:
    """Base of every method's knobs. Subclasses list which fields the caps govern."""

    capped_by_samples: ClassVar[tuple[str, ...]] = ()
    capped_by_steps: ClassVar[tuple[str, ...]] = ()

    def check(self) -> None:
        """Method-specific consistency checks; raise InvalidParameter."""


P = TypeVar("P", bound=MethodParams)


def _type_names(expected: tuple[Any, ...]) -> str:
    return " or ".join(getattr(t, "__name__", str(t)) for t in expected)


def coerce(name: str, value: Any, annotation: Any) -> Any:
    """``value`` as the type ``annotation`` names (``int``, ``float``, ``str``, ``bool`` or
    an optional of one), or :class:`InvalidParameter`. An int is a valid float; a
    boolean is never a number; floats must be finite and ints fit in 32 bits."""
    expected = typing.get_args(annotation) or (annotation,)
    if value is None and type(None) in expected:
        return None
    if isinstance(value, bool) and bool not in expected:
        raise InvalidParameter(name, f"expected {_type_names(expected)}, got a boolean")
    if float in expected and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = float(value)
        if not math.isfinite(value):
            raise InvalidParameter(name, f"must be a finite number, got {value}")
        return value
    if int in expected and isinstance(value, int) and not -(2**31) <= value < 2**31:
        # every integer knob reaches an engine as a 32-bit tensor
        raise InvalidParameter(name, f"must fit in 32 bits, got {value}")
    if any(isinstance(value, t) for t in expected if isinstance(t, type)):
        return value
    shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
    raise InvalidParameter(
        name, f"expected {_type_names(expected)}, got {type(value).__name__} {shown}"
    )


def _limits(params: MethodParams, caps: Caps) -> dict[str, tuple[str, int]]:
    """Each capped knob of ``params``, with the cap's name and value."""
    limits = {name: ("max_samples", caps.max_samples) for name in params.capped_by_samples}
    limits.update({name: ("max_steps", caps.max_steps) for name in params.capped_by_steps})
    if hasattr(params, "max_tokens"):
        limits["max_tokens"] = ("max_tokens", caps.max_tokens)
    return limits


def _check_range(name: str, value: int, cap_name: str, cap: int) -> None:
    if not 1 <= value <= cap:
        raise InvalidParameter(
            name, f"must be between 1 and the server cap {cap_name}={cap}, got {value}"
        )


_fields_and_hints_of: dict[type, tuple[frozenset[str], dict[str, Any]]] = {}


def _fields_and_hints(cls: type) -> tuple[frozenset[str], dict[str, Any]]:
    # get_type_hints evaluates every annotation string: 2% of the scaffolding stub's event
    # loop under load when done per request
    if cls not in _fields_and_hints_of:
        fields = frozenset(f.name for f in dataclasses.fields(cls))
        _fields_and_hints_of[cls] = fields, typing.get_type_hints(cls)
    return _fields_and_hints_of[cls]


def build_params(cls: type[P], values: dict[str, Any], caps: Caps) -> P:
    fields, hints = _fields_and_hints(cls)
    unknown = sorted(set(values) - fields)
    if unknown:
        raise InvalidParameter(
            unknown[0], f"unknown parameter; {cls.__name__} takes {', '.join(sorted(fields))}"
        )
    params = cls(**{name: coerce(name, value, hints[name]) for name, value in values.items()})
    limits = _limits(params, caps)
    for name, (_, limit) in limits.items():
        # a default the caps forbid shrinks to the cap; only what a client asked for is refused
        if name not in values and getattr(params, name) > limit:
            setattr(params, name, limit)
    for name in fields:
        value = getattr(params, name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
            raise InvalidParameter(name, f"must not be negative, got {value}")
    for name, (cap_name, limit) in limits.items():
        _check_range(name, getattr(params, name), cap_name, limit)
    params.check()
    return params
