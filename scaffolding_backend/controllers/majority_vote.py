"""Self-consistency: sample N reasoning paths, answer with the most frequent final
answer (Wang et al., 2023). Equivalent answers vote together; a sample without a
readable answer abstains; ties go to the answer that appeared first."""

from __future__ import annotations

from dataclasses import dataclass

from ..kernel.controller import Candidate, Controller, EventKind, Outcome, Process, Progress
from ..reasoning.sampling import SamplingParams, sample_candidates
from ..reasoning.voting import Tally, tally


@dataclass
class MajorityVoteParams(SamplingParams):
    samples: int = 8
    capped_by_samples = ("samples",)


class MajorityVote(Controller[MajorityVoteParams]):
    name = "majority_vote"
    Params = MajorityVoteParams

    def process(self, question: str) -> Process:
        running = Tally()

        def on_sample(index: int, candidate: Candidate) -> Progress:
            running.add(index, candidate.answer)
            leader = running.winner()
            return Progress(
                EventKind.SAMPLE,
                {
                    "index": index,
                    "answer": candidate.answer.text if candidate.answer else None,
                    "output_tokens": candidate.output_tokens,
                    "finished": len(running.abstained)
                    + sum(len(g.members) for g in running.groups),
                    "leader": leader.answer.text if leader else None,
                    "tally": {g.answer.text: len(g.members) for g in running.groups},
                },
            )

        candidates = yield from sample_candidates(
            question, self.params.samples, self.params, self.prompt_format, on_candidate=on_sample
        )
        votes = tally(candidates)
        winner = votes.winner()
        for group in votes.groups:
            for index in group.members:
                candidates[index].votes = len(group.members)
        yield Progress(EventKind.TALLY, votes.to_json())
        if winner is None:
            return Outcome(
                text=candidates[0].text,
                answer=None,
                candidates=candidates,
                details={"tally": votes.to_json()},
            )
        chosen = candidates[winner.members[0]]
        return Outcome(
            text=chosen.text,
            answer=chosen.answer,
            candidates=candidates,
            details={"tally": votes.to_json()},
        )
