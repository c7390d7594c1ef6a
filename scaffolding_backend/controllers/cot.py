"""Chain-of-thought: one generation, read its final answer (Wei et al., 2022)."""

from __future__ import annotations

from dataclasses import dataclass

from ..kernel.controller import Controller, Outcome, Process
from ..reasoning.sampling import SamplingParams, sample_candidates


@dataclass
class CoTParams(SamplingParams):
    temperature: float = 0.0  # greedy by default: one answer should be the model's best guess


class ChainOfThought(Controller[CoTParams]):
    name = "cot"
    Params = CoTParams

    def process(self, question: str) -> Process:
        [solution] = yield from sample_candidates(question, 1, self.params, self.prompt_format)
        return Outcome(text=solution.text, answer=solution.answer, candidates=[solution])
