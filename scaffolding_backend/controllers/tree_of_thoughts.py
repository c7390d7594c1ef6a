"""Tree of thoughts, breadth-first (Yao et al., 2023, "Tree of Thoughts:
Deliberate Problem Solving with Large Language Models").

Each level proposes ``children_per_node`` next thoughts (reasoning steps) for
every state in the frontier, values every new state — here with the process
reward model instead of a self-evaluation prompt — and keeps the ``beam_width``
best states. A kept state that reached an answer is a solution; the search ends
when the frontier is empty or at ``max_depth``. The answer is the best solution
by aggregated PRM score.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..reasoning.scoring import RewardGuidedParams
from ..reasoning.stepwise import Path
from .beam_search import LevelSearch


@dataclass
class TreeOfThoughtsParams(RewardGuidedParams):
    children_per_node: int = 3  # thoughts proposed per frontier state
    beam_width: int = 2  # states kept per level
    max_depth: int = 8
    capped_by_samples = ("children_per_node", "beam_width")
    capped_by_steps = ("max_depth",)


class TreeOfThoughts(LevelSearch[TreeOfThoughtsParams]):
    """Breadth-first ToT is beam search in which every state proposes a fixed number of thoughts."""

    name = "tree_of_thoughts"
    Params = TreeOfThoughtsParams

    def width(self) -> int:
        return self.params.beam_width

    def levels(self) -> int:
        return self.params.max_depth

    def branching(self, frontier: list[Path]) -> list[int]:
        return [self.params.children_per_node] * len(frontier)
