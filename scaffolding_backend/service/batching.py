"""Running the rows of several requests through one engine call, with one request's bad
row failing that request alone."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

Row = TypeVar("Row")
Result = TypeVar("Result")


def run_isolated(
    groups: Sequence[list[Row]], run: Callable[[list[Row]], list[Result]]
) -> list[list[Result] | Exception]:
    """``run`` over the rows of every group at once (one batched engine call); if that
    fails, over each group on its own, so the group whose row broke it gets the error and
    the others their results. Returns, per group, its results or its error."""
    rows = [row for group in groups for row in group]
    try:
        results = run(rows)
    except Exception as error:
        if len(groups) == 1:
            return [error]
        return [_alone(group, run) for group in groups]
    out: list[list[Result] | Exception] = []
    position = 0
    for group in groups:
        out.append(results[position : position + len(group)])
        position += len(group)
    return out


def _alone(group: list[Row], run: Callable[[list[Row]], list[Result]]) -> list[Result] | Exception:
    try:
        return run(group)
    except Exception as error:
        return error
