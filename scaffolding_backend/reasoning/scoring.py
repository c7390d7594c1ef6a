"""Reward-model scoring shared by every reward-guided method.

A reward task comes back with ``step_scores`` (a PRM: one probability per step;
an ORM: a single entry) and ``score``. Methods compare solutions by one number,
the step scores *aggregated* (search-and-learn's ``agg_strategy``): ``last``
(the PRM's judgement of the whole prefix), ``min`` (the weakest step), ``prod``
(every step correct) or ``mean``. For an ORM all four agree.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from ..kernel.controller import Candidate, EventKind, Progress
from ..kernel.params import InvalidParameter
from ..kernel.prompts import PromptFormat
from ..kernel.tasks import RewardTask, reward
from .sampling import SamplingParams, sample_candidates

AGGREGATIONS = ("last", "min", "prod", "mean")


def aggregate(step_scores: Sequence[float], how: str) -> float:
    if how not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {how!r}; expected one of {', '.join(AGGREGATIONS)}")
    if not step_scores:
        raise ValueError("no step scores to aggregate")
    if how == "last":
        return step_scores[-1]
    if how == "min":
        return min(step_scores)
    if how == "prod":
        return math.prod(step_scores)
    return sum(step_scores) / len(step_scores)


def _rank(score: float | None) -> float:
    return -math.inf if score is None else score  # an unscored solution never beats a scored one


def best_index(scores: Sequence[float | None]) -> int:
    """Index of the highest score; the earliest wins a tie, so a replayed request picks the same."""
    return max(range(len(scores)), key=lambda index: (_rank(scores[index]), -index))


def top_indexes(scores: Sequence[float | None], count: int) -> list[int]:
    """The ``count`` highest scores' indexes, best first; ties keep the earlier one."""
    return sorted(range(len(scores)), key=lambda index: (-_rank(scores[index]), index))[:count]


@dataclass
class RewardGuidedParams(SamplingParams):
    """Knobs every method that ranks solutions with the reward model shares."""

    aggregation: str = "last"  # how a PRM's step scores become one number

    def check(self) -> None:
        super().check()
        if self.aggregation not in AGGREGATIONS:
            raise InvalidParameter(
                "aggregation", f"must be one of {', '.join(AGGREGATIONS)}, got {self.aggregation!r}"
            )


class Scorable(Protocol):
    """A solution the reward model can judge: a Candidate or a search Path."""

    step_scores: list[float] | None
    score: float | None


S = TypeVar("S", bound=Scorable)


def score_solutions(
    question: str,
    solutions: Sequence[S],
    steps_of: Callable[[S], Sequence[str]],
    how: str,
    *,
    phase: str = "score",
) -> Generator[list[RewardTask], Any, list[float]]:
    """Score solutions with the reward model in ONE yield (the worker sends one batched
    request), set each one's ``step_scores`` and aggregated ``score``, return the scores."""
    tasks = [reward(question, list(steps_of(solution)), phase=phase) for solution in solutions]
    if tasks:
        yield tasks
    scores = []
    for solution, task in zip(solutions, tasks):
        # An ORM (or a PRM given no step text) may leave step_scores empty: its outcome
        # score stands for them.
        step_scores = task.step_scores or ([] if task.score is None else [task.score])
        solution.step_scores = [float(s) for s in step_scores]
        solution.score = aggregate(solution.step_scores, how)
        scores.append(solution.score)
    return scores


def score_candidates(
    question: str, candidates: Sequence[Candidate], prompt_format: PromptFormat, how: str
) -> Generator[list[RewardTask], Any, list[float]]:
    return (
        yield from score_solutions(
            question, candidates, lambda c: prompt_format.split_steps(c.text), how
        )
    )


def sample_and_score(
    question: str, count: int, params: RewardGuidedParams, prompt_format: PromptFormat
) -> Generator[Any, Any, list[Candidate]]:
    """Draw ``count`` full solutions, stream each as it finishes, then score them all in
    one batch."""

    def on_sample(index: int, candidate: Candidate) -> Progress:
        answer = candidate.answer.text if candidate.answer else None
        return Progress(
            EventKind.SAMPLE,
            {"index": index, "answer": answer, "output_tokens": candidate.output_tokens},
        )

    candidates = yield from sample_candidates(
        question, count, params, prompt_format, on_candidate=on_sample
    )
    yield from score_candidates(question, candidates, prompt_format, params.aggregation)
    return candidates
