"""Program-aided language models (Gao et al., 2023): write one program for the question,
run it in the sandbox, answer with what it printed. A program that fails has no answer."""

from __future__ import annotations

from dataclasses import dataclass

from ..kernel.controller import Controller, Outcome, Process
from ..reasoning.programs import run_record, write_and_run_programs
from ..reasoning.sampling import SamplingParams


@dataclass
class PALParams(SamplingParams):
    temperature: float = 0.0  # greedy by default: one program should be the model's best guess


class PAL(Controller[PALParams]):
    name = "pal"
    Params = PALParams

    def process(self, question: str) -> Process:
        candidates, runs = yield from write_and_run_programs(
            question, 1, self.params, self.prompt_format
        )
        [program] = candidates
        return Outcome(
            text=program.text,
            answer=program.answer,
            candidates=candidates,
            details={"runs": [run_record(run) for run in runs]},
        )
