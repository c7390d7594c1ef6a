"""Weighted best-of-N: sample N solutions, score each with a reward model, and
answer with the final answer whose solutions' scores sum highest — reward-weighted
majority voting (Li et al., 2023, "Making Language Models Better Reasoners with
Step-Aware Verifier"; Uesato et al., 2022). Equivalent answers pool their scores;
a solution without a readable answer abstains; a tie goes to the answer seen first.
Within the winning answer, the highest-scored solution is returned."""

from __future__ import annotations

from typing import Any

from ..kernel.controller import Candidate
from ..reasoning.scoring import best_index
from ..reasoning.voting import tally
from .best_of_n import BestOfN


class WeightedBestOfN(BestOfN):
    name = "weighted_best_of_n"  # best-of-N's knobs and sampling; only the decision differs

    def choose(self, candidates: list[Candidate]) -> tuple[int, dict[str, Any]]:
        scores = [candidate.score for candidate in candidates]
        votes = tally(candidates, scores)
        winner = votes.winner()
        if winner is None:  # no readable answer anywhere: the best-scored text, answer unknown
            return super().choose(candidates)[0], {"tally": votes.to_json()}
        return winner.members[best_index([scores[index] for index in winner.members])], {
            "tally": votes.to_json()
        }
