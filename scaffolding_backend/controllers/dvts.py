"""Diverse verifier tree search (Beeching, Tunstall and Rush, 2024, "Scaling
test-time compute with open models"; search-and-learn ``dvts``).

Beam search's beams tend to collapse onto one high-scoring prefix. DVTS splits
the ``samples`` budget into ``samples / beam_width`` independent subtrees, each
searched greedily on the PRM: every step a subtree's path gets ``beam_width``
one-step continuations and keeps its best one. All subtrees' generations go in
one yield and all their scores in one batched reward request per step. The
answer is the best subtree result by aggregated PRM score.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..kernel.controller import Process
from ..kernel.params import InvalidParameter
from ..reasoning.scoring import RewardGuidedParams, best_index
from ..reasoning.stepwise import Path, StepwiseController


@dataclass
class DVTSParams(RewardGuidedParams):
    samples: int = 8  # total continuations per step, over all subtrees
    beam_width: int = 2  # continuations per subtree per step
    max_steps: int = 16
    capped_by_samples = ("samples", "beam_width")
    capped_by_steps = ("max_steps",)

    def check(self) -> None:
        super().check()
        if self.samples % self.beam_width:
            raise InvalidParameter(
                "beam_width",
                f"must divide samples ({self.samples}) into whole subtrees, got {self.beam_width}",
            )

    @property
    def subtrees(self) -> int:
        return self.samples // self.beam_width


class DVTS(StepwiseController[DVTSParams]):
    name = "dvts"
    Params = DVTSParams

    def process(self, question: str) -> Process:
        search = self.start(question)
        subtrees = [Path() for _ in range(self.params.subtrees)]  # each subtree's current path
        for step in range(1, self.params.max_steps + 1):
            growing = [index for index, path in enumerate(subtrees) if not path.finished]
            if not growing:
                break
            groups = yield from search.expand_and_score(
                [subtrees[i] for i in growing], [self.params.beam_width] * len(growing)
            )
            children: list[Path] = []
            kept: list[int] = []
            for subtree, group in zip(growing, groups):
                best = best_index([child.score for child in group])
                kept.append(len(children) + best)
                children.extend(group)
                subtrees[subtree] = group[best]
            yield from search.report(step, children, kept=kept, subtrees=growing)
            search.retire_finished([subtrees[i] for i in growing])
        return (
            yield from search.conclude(
                [path for path in subtrees if not path.finished], subtrees=self.params.subtrees
            )
        )
