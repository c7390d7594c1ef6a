"""Method knobs: one dataclass per method, built from a request's JSON parameters.

Unknown names and wrong types are refused with the field named, and the
server's caps (samples, tokens) are enforced here, once for every method.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, TypeVar


class InvalidParameter(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class Caps:
    """Server-side limits from the scaffolding model's configuration."""

    max_samples: int = 64  # any knob that multiplies generations (samples, beam width, iterations, ...)
    max_tokens: int = 1024  # per generation
    max_steps: int = 32  # depth of step-wise search


@dataclass
class MethodParams:
    """Base of every method's knobs. Subclasses list which fields the caps govern."""

    capped_by_samples: typing.ClassVar[tuple[str, ...]] = ()
    capped_by_steps: typing.ClassVar[tuple[str, ...]] = ()

    def check(self) -> None:
        """Method-specific consistency checks; raise InvalidParameter."""


P = TypeVar("P", bound=MethodParams)


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    expected = typing.get_args(annotation) or (annotation,)
    if isinstance(value, bool) and bool not in expected:
        raise InvalidParameter(name, f"expected {annotation.__name__ if hasattr(annotation, '__name__') else annotation}, got a boolean")
    if float in expected and isinstance(value, int):
        return float(value)
    if any(isinstance(value, t) for t in expected if isinstance(t, type)):
        return value
    if value is None and type(None) in expected:
        return None
    names = " or ".join(getattr(t, "__name__", str(t)) for t in expected)
    raise InvalidParameter(name, f"expected {names}, got {type(value).__name__} {value!r}")


def _fit_defaults_to_caps(params: MethodParams, given: set[str], caps: Caps) -> None:
    """A default the server's caps forbid shrinks to the cap; only what a client asked for is refused."""
    limits = {name: caps.max_samples for name in params.capped_by_samples}
    limits.update({name: caps.max_steps for name in params.capped_by_steps})
    if hasattr(params, "max_tokens"):
        limits["max_tokens"] = caps.max_tokens
    for name, limit in limits.items():
        if name not in given and getattr(params, name) > limit:
            setattr(params, name, limit)


def build_params(cls: type[P], values: dict[str, Any], caps: Caps) -> P:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise InvalidParameter(unknown[0], f"unknown parameter; {cls.__name__} takes {', '.join(sorted(fields))}")
    hints = typing.get_type_hints(cls)
    params = cls(**{name: _coerce(name, value, hints[name]) for name, value in values.items()})
    _fit_defaults_to_caps(params, set(values), caps)
    for name in fields:
        value = getattr(params, name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
            raise InvalidParameter(name, f"must not be negative, got {value}")
    for name in params.capped_by_samples:
        if not 1 <= getattr(params, name) <= caps.max_samples:
            raise InvalidParameter(name, f"must be between 1 and the server cap max_samples={caps.max_samples}, got {getattr(params, name)}")
    for name in params.capped_by_steps:
        if not 1 <= getattr(params, name) <= caps.max_steps:
            raise InvalidParameter(name, f"must be between 1 and the server cap max_steps={caps.max_steps}, got {getattr(params, name)}")
    if "max_tokens" in fields and not 1 <= params.max_tokens <= caps.max_tokens:
        raise InvalidParameter("max_tokens", f"must be between 1 and the server cap max_tokens={caps.max_tokens}, got {params.max_tokens}")
    params.check()
    return params
