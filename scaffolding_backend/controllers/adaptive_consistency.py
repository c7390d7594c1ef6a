"""Adaptive-Consistency (Aggarwal et al., 2023, "Let's Sample Step by Step:
Adaptive-Consistency for Efficient Reasoning and Coding with LLMs"): majority voting that
stops sampling once the vote is settled instead of always drawing N samples.

Samples go out ``wave`` at a time. After each one, the Beta stopping criterion looks at
the votes so far: with ``v1`` votes for the leading answer and ``v2`` for the runner-up,
the leader is settled when, under a uniform prior, the posterior probability that it is
the majority answer, P(p > 1/2) for p ~ Beta(v1 + 1, v2 + 1), reaches ``confidence``.
Samples without a readable answer abstain. Then the samples still running are stopped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..kernel.controller import Controller, EventKind, Outcome, Process, Progress
from ..kernel.params import InvalidParameter
from ..reasoning.early_stop import Sample, sample_until
from ..reasoning.sampling import SamplingParams
from ..reasoning.voting import tally


def leader_settled(votes: list[int], confidence: float) -> bool:
    """The Beta criterion: P(p > 1/2) for p ~ Beta(v1 + 1, v2 + 1) >= confidence, where v1
    and v2 are the two largest vote counts. For whole numbers it is a binomial tail:
    P = sum_{j < v1 + 1} C(n, j) / 2^n with n = v1 + v2 + 1."""
    ranked = [*sorted(votes, reverse=True), 0, 0]
    first, second = ranked[0], ranked[1]
    if first == 0:
        return False
    n = first + second + 1
    probability = sum(math.comb(n, j) for j in range(first + 1)) / 2**n
    return probability >= confidence


@dataclass
class AdaptiveConsistencyParams(SamplingParams):
    samples: int = 16  # the most samples it may draw
    wave: int = 4  # samples in flight at once
    confidence: float = 0.95
    capped_by_samples = ("samples", "wave")

    def check(self) -> None:
        super().check()
        if self.wave > self.samples:
            raise InvalidParameter(
                "wave", f"must not exceed samples ({self.samples}), got {self.wave}"
            )
        if not 0.5 < self.confidence < 1:
            raise InvalidParameter("confidence", f"must be in (0.5, 1), got {self.confidence}")


class AdaptiveConsistency(Controller[AdaptiveConsistencyParams]):
    name = "adaptive_consistency"
    Params = AdaptiveConsistencyParams

    def process(self, question: str) -> Process:
        def settled(counted: list[Sample]) -> bool:
            votes = tally([s.candidate for s in counted if s.candidate is not None])
            return leader_settled(
                [len(group.members) for group in votes.groups], self.params.confidence
            )

        state = yield from sample_until(
            question,
            self.params,
            self.prompt_format,
            samples=self.params.samples,
            wave=self.params.wave,
            settled=settled,
        )
        candidates = [s.candidate for s in state.counted() if s.candidate is not None]
        votes = tally(candidates)
        for group in votes.groups:
            for index in group.members:
                candidates[index].votes = len(group.members)
        details = {
            "tally": votes.to_json(),
            "samples_used": len(candidates),
            "settled": state.settled,
        }
        yield Progress(EventKind.TALLY, votes.to_json())
        winner = votes.winner()
        if winner is None:
            return Outcome(
                text=candidates[0].text if candidates else "",
                answer=None,
                candidates=candidates,
                details=details,
            )
        chosen = candidates[winner.members[0]]
        return Outcome(
            text=chosen.text, answer=chosen.answer, candidates=candidates, details=details
        )
