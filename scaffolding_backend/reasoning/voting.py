"""Grouping equivalent answers and voting over them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ..kernel.controller import Answer, Candidate
from .answers import answers_equal


@dataclass
class AnswerGroup:
    answer: Answer
    members: list[int] = field(default_factory=list)  # candidate indexes, in order
    weight: float = 0.0

    def to_json(self) -> dict:
        return {
            "answer": self.answer.text,
            "votes": len(self.members),
            "weight": round(self.weight, 6),
            "members": self.members,
        }


class Tally:
    """Equivalent answers grouped in order of first appearance; unparseable answers do not vote."""

    def __init__(self) -> None:
        self.groups: list[AnswerGroup] = []
        self.abstained: list[int] = []

    def add(self, index: int, answer: Answer | None, weight: float = 1.0) -> None:
        if answer is None:
            self.abstained.append(index)
            return
        for group in self.groups:
            if answers_equal(group.answer, answer):
                break
        else:
            group = AnswerGroup(answer)
            self.groups.append(group)
        group.members.append(index)
        group.weight += weight

    def winner(self) -> AnswerGroup | None:
        """Heaviest group; a tie goes to the answer that appeared first (deterministic given
        the seed)."""
        best: AnswerGroup | None = None
        for group in self.groups:  # strict '>' keeps the earliest of equal weights
            if best is None or group.weight > best.weight:
                best = group
        return best

    def to_json(self) -> dict:
        ranked = sorted(self.groups, key=lambda g: -g.weight)
        return {"groups": [g.to_json() for g in ranked], "abstained": self.abstained}


def tally(candidates: Sequence[Candidate], weights: Sequence[float | None] | None = None) -> Tally:
    """One vote per candidate, or its weight (an unscored candidate weighs nothing)."""
    result = Tally()
    for index, candidate in enumerate(candidates):
        weight = 1.0 if weights is None else weights[index] or 0.0
        result.add(index, candidate.answer, weight)
    return result
