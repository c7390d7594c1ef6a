"""Best-of-N: sample N solutions, let a reward model judge each, answer with the
highest-scored one (Cobbe et al., 2021, "Training Verifiers to Solve Math Word
Problems"; with a process reward model, Lightman et al., 2023, "Let's Verify Step
by Step"). A PRM's step scores are aggregated (``last``, ``min``, ``prod`` or
``mean``); a tie goes to the earliest sample."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..kernel.controller import Candidate, Controller, EventKind, Outcome, Process, Progress
from ..reasoning.scoring import RewardGuidedParams, best_index, sample_and_score


@dataclass
class BestOfNParams(RewardGuidedParams):
    samples: int = 8
    capped_by_samples = ("samples",)


class BestOfN(Controller[BestOfNParams]):
    name = "best_of_n"
    Params = BestOfNParams

    def process(self, question: str) -> Process:
        candidates = yield from sample_and_score(
            question, self.params.samples, self.params, self.prompt_format
        )
        chosen, details = self.choose(candidates)
        answer = candidates[chosen].answer
        yield Progress(
            EventKind.BEST,
            {"answer": answer.text if answer else None, "score": candidates[chosen].score},
        )
        details = {
            "scores": [c.score for c in candidates],
            "aggregation": self.params.aggregation,
            "chosen": chosen,
            **details,
        }
        return Outcome(
            text=candidates[chosen].text, answer=answer, candidates=candidates, details=details
        )

    def choose(self, candidates: list[Candidate]) -> tuple[int, dict[str, Any]]:
        """The chosen candidate's index, and what to add to the details about the decision."""
        return best_index([candidate.score for candidate in candidates]), {}
