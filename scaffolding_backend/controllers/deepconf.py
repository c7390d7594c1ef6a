"""DeepConf (Fu et al., 2025, "Deep Think with Confidence"): vote over the traces the
model was confident in, weighted by that confidence, and stop traces that lose it.

Confidence is read from the log-probabilities the generator streams: a token's
confidence is its log-probability (the generators this project speaks return the sampled
token's log-probability, not the top-k the paper averages over); a window's confidence
is the mean over ``window`` consecutive tokens; a trace's confidence is its lowest window
(the paper's "lowest group confidence"), reported as the geometric-mean probability
``exp(mean)`` in (0, 1].

* ``mode="offline"``: ``samples`` traces; the ``keep`` fraction with the highest
  confidence vote, each with its confidence as weight.
* ``mode="online"``: ``warmup`` traces run to the end and set the threshold, the
  confidence the top ``keep`` fraction of them reach; every later trace is stopped the
  moment a window falls below it and does not vote; sampling stops once the leading
  answer holds ``consensus`` of the vote weight (decided on traces in index order, so a
  request replays exactly).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..kernel.controller import Candidate, Controller, EventKind, Outcome, Process, Progress
from ..kernel.params import InvalidParameter
from ..kernel.tasks import GenerationTask
from ..reasoning.early_stop import Sample, sample_until
from ..reasoning.sampling import SamplingParams
from ..reasoning.voting import Tally

MODES = ("online", "offline")


def lowest_window(log_probs: Sequence[float], window: int) -> float:
    """The lowest mean log-probability over ``window`` consecutive tokens (over all of them
    when the trace is shorter); 0 for an empty trace."""
    if not log_probs:
        return 0.0
    if len(log_probs) <= window:
        return sum(log_probs) / len(log_probs)
    running = sum(log_probs[:window])
    lowest = running
    for index in range(window, len(log_probs)):
        running += log_probs[index] - log_probs[index - window]
        lowest = min(lowest, running)
    return lowest / window


def threshold(confidences: Sequence[float], keep: float) -> float:
    """The confidence the top ``keep`` fraction of traces reach (the lowest kept one)."""
    ranked = sorted(confidences, reverse=True)
    kept = max(1, math.ceil(keep * len(ranked)))
    return ranked[kept - 1]


@dataclass
class DeepConfParams(SamplingParams):
    samples: int = 16  # the most traces
    mode: str = "online"
    window: int = 8  # tokens per confidence window
    keep: float = 0.9  # the fraction of (warm-up) traces whose confidence sets the bar
    warmup: int = 4  # online: traces that run to the end to set the threshold
    wave: int = 4  # online: traces in flight at once
    consensus: float = 0.95  # online: stop once the leader holds this share of the vote weight
    capped_by_samples = ("samples", "warmup", "wave")

    def check(self) -> None:
        super().check()
        if self.mode not in MODES:
            raise InvalidParameter("mode", f"must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not 1 <= self.window <= self.max_tokens:
            raise InvalidParameter("window", f"must be between 1 and max_tokens, got {self.window}")
        if not 0 < self.keep <= 1:
            raise InvalidParameter("keep", f"must be in (0, 1], got {self.keep}")
        if not 0.5 < self.consensus <= 1:
            raise InvalidParameter("consensus", f"must be in (0.5, 1], got {self.consensus}")
        for name in ("warmup", "wave"):
            if getattr(self, name) > self.samples:
                raise InvalidParameter(
                    name, f"must not exceed samples ({self.samples}), got {getattr(self, name)}"
                )


class DeepConf(Controller[DeepConfParams]):
    name = "deepconf"
    Params = DeepConfParams

    def process(self, question: str) -> Process:
        params = self.params
        confidences: dict[int, float] = {}
        bar: list[float] = []  # the online threshold, once the warm-up set it

        def prepare(sample: Sample) -> None:
            sample.task.return_log_probs = True
            if params.mode == "online" and sample.index >= params.warmup:
                sample.task.on_chunk = self._watch(sample, bar)

        def settled(counted: list[Sample]) -> bool:
            for sample in counted:
                confidences.setdefault(sample.index, self._confidence(sample.task))
            if params.mode == "offline":
                return False  # every trace, then the vote
            if not bar and sum(s.index < params.warmup for s in counted) >= params.warmup:
                bar.append(
                    threshold([confidences[s.index] for s in counted[: params.warmup]], params.keep)
                )
            if not bar:
                return False
            votes = self._vote(counted, confidences, bar[0])
            winner, total = votes.winner(), sum(group.weight for group in votes.groups)
            return winner is not None and total > 0 and winner.weight / total >= params.consensus

        state = yield from sample_until(
            question,
            params,
            self.prompt_format,
            samples=params.samples,
            wave=params.samples if params.mode == "offline" else params.wave,
            settled=settled,
            prepare=prepare,
        )
        counted = state.counted()
        for sample in counted:
            confidences.setdefault(sample.index, self._confidence(sample.task))
        cut = (
            bar[0]
            if bar
            else threshold([confidences[s.index] for s in counted] or [0.0], params.keep)
        )
        candidates: list[Candidate] = [s.candidate for s in counted if s.candidate is not None]
        for candidate, sample in zip(candidates, counted):
            candidate.score = round(confidences[sample.index], 6)
        votes = self._vote(counted, confidences, cut)
        for group in votes.groups:
            for index in group.members:
                candidates[index].votes = len(group.members)
        details = {
            "tally": votes.to_json(),
            "mode": params.mode,
            "threshold": round(cut, 6),
            "traces": len(state.samples),
            "discarded": sum(s.discarded for s in state.samples),
            "settled": state.settled,
        }
        yield Progress(EventKind.TALLY, votes.to_json())
        winner = votes.winner()
        if winner is None:
            text = candidates[0].text if candidates else ""
            return Outcome(text=text, answer=None, candidates=candidates, details=details)
        chosen = candidates[max(winner.members, key=lambda i: (confidences[counted[i].index], -i))]
        return Outcome(
            text=chosen.text, answer=chosen.answer, candidates=candidates, details=details
        )

    def _confidence(self, task: GenerationTask) -> float:
        """A finished trace's confidence: exp(lowest window mean log-prob), in (0, 1]."""
        return math.exp(lowest_window(task.token_log_probs or [], self.params.window))

    @staticmethod
    def _vote(counted: list[Sample], confidences: dict[int, float], cut: float) -> Tally:
        """A vote per trace whose confidence reaches the cut, weighted by it; the rest abstain."""
        votes = Tally()
        for position, sample in enumerate(counted):
            confidence = confidences[sample.index]
            answer = (
                sample.candidate.answer
                if sample.candidate is not None and confidence >= cut
                else None
            )
            votes.add(position, answer, confidence)
        return votes

    def _watch(self, sample: Sample, bar: list[float]):
        """An ``on_chunk`` that stops the trace once a window's confidence falls below the bar."""
        written: list[float] = []
        window = self.params.window

        def on_chunk(_task: GenerationTask, _text: str, log_probs: list[float]) -> bool:
            written.extend(log_probs)
            if not bar or len(written) < window:
                return False
            if math.exp(sum(written[-window:]) / window) < bar[0]:
                sample.discarded = True
                return True
            return False

        return on_chunk
