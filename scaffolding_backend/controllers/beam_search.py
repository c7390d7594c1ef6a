"""Beam search over reasoning steps guided by a process reward model (Snell et
al., 2024, "Scaling LLM Test-Time Compute Optimally can be More Effective than
Scaling Model Parameters"; Hugging Face search-and-learn ``beam_search``).

Every step draws ``samples`` one-step continuations spread over the live beams
(``samples / beam_width`` each when the beam is full), scores all of them with
the PRM in one batched request, and keeps the ``beam_width`` best by aggregated
score. A kept path that finished leaves the beam as a solution; the search ends
when the beam is empty or after ``max_steps``. The answer is the best solution
by aggregated PRM score.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..kernel.controller import Process
from ..kernel.params import InvalidParameter
from ..reasoning.scoring import RewardGuidedParams
from ..reasoning.stepwise import Path, R, StepwiseController


@dataclass
class BeamSearchParams(RewardGuidedParams):
    samples: int = 8  # continuations drawn per step, over the whole beam
    beam_width: int = 2  # paths kept per step
    max_steps: int = 16
    capped_by_samples = ("samples", "beam_width")
    capped_by_steps = ("max_steps",)

    def check(self) -> None:
        super().check()
        if self.beam_width > self.samples:
            raise InvalidParameter(
                "beam_width", f"must not exceed samples ({self.samples}), got {self.beam_width}"
            )


def spread(total: int, parents: int) -> list[int]:
    """Split ``total`` children over ``parents`` as evenly as possible, earlier parents first,
    so a beam that lost finished paths still draws the full ``samples`` per step."""
    return [total // parents + (1 if index < total % parents else 0) for index in range(parents)]


class LevelSearch(StepwiseController[R]):
    """A beam over reasoning steps; subclasses say how wide, how deep, and how many
    continuations each live path gets per level."""

    def process(self, question: str) -> Process:
        search = self.start(question)
        unfinished = yield from search.beam(self.width(), self.levels(), self.branching)
        return (yield from search.conclude(unfinished))

    def width(self) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    def levels(self) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    def branching(self, beam: list[Path]) -> list[int]:  # pragma: no cover - interface
        raise NotImplementedError


class BeamSearch(LevelSearch[BeamSearchParams]):
    name = "beam_search"
    Params = BeamSearchParams

    def width(self) -> int:
        return self.params.beam_width

    def levels(self) -> int:
        return self.params.max_steps

    def branching(self, beam: list[Path]) -> list[int]:
        """How many continuations each live path gets this step."""
        return spread(self.params.samples, len(beam))
