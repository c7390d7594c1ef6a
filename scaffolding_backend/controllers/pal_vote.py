"""Program-aided self-consistency: sample N programs, run each in the sandbox, answer with
the most frequent printed result. Equivalent results vote together; a program that fails
(an error, a limit, no readable output) abstains; ties go to the result seen first."""

from __future__ import annotations

from dataclasses import dataclass

from ..kernel.controller import Controller, EventKind, Outcome, Process, Progress
from ..reasoning.programs import run_record, write_and_run_programs
from ..reasoning.sampling import SamplingParams
from ..reasoning.voting import tally


@dataclass
class PALVoteParams(SamplingParams):
    samples: int = 8
    capped_by_samples = ("samples",)


class PALVote(Controller[PALVoteParams]):
    name = "pal_vote"
    Params = PALVoteParams

    def process(self, question: str) -> Process:
        candidates, runs = yield from write_and_run_programs(
            question, self.params.samples, self.params, self.prompt_format
        )
        votes = tally(candidates)
        for group in votes.groups:
            for index in group.members:
                candidates[index].votes = len(group.members)
        yield Progress(EventKind.TALLY, votes.to_json())
        details = {"tally": votes.to_json(), "runs": [run_record(run) for run in runs]}
        winner = votes.winner()
        if winner is None:
            return Outcome(
                text=candidates[0].text, answer=None, candidates=candidates, details=details
            )
        chosen = candidates[winner.members[0]]
        return Outcome(
            text=chosen.text, answer=chosen.answer, candidates=candidates, details=details
        )
