"""Step-wise search over partial solutions, shared by beam search, DVTS, MCTS and
tree of thoughts (the pieces search-and-learn keeps apart from its search loops).

A :class:`Path` is a partial solution: the steps taken so far. A
:class:`StepwiseSearch` serves one question: it *expands* paths by one step (one
generation per child, stopped at the step delimiter), *scores* paths with the
PRM (one batched reward request per call), keeps the per-step log that becomes
``Outcome.details["steps"]`` and the streamed ``"step"``/``"best"`` events, and
*concludes*: the best finished path by aggregated PRM score wins.

Generation contract: stopped at the delimiter (``finish_reason == "stop_word"``)
the path goes on; ``"eos"`` or ``"length"`` (cut by max_tokens) finishes it.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..kernel.controller import Answer, Candidate, Controller, EventKind, Outcome, Progress
from ..kernel.prompts import PromptFormat
from ..kernel.tasks import FinishReason, GenerationTask
from .answers import extract_answer
from .scoring import RewardGuidedParams, best_index, score_solutions, top_indexes


@dataclass
class Path:
    steps: tuple[str, ...] = ()
    finished: bool = False
    output_tokens: int = 0  # spent on this path, its ancestors' steps included
    answer: Answer | None = None  # read once the path is finished
    step_scores: list[float] | None = None  # from the last time the PRM judged this path
    score: float | None = None  # step_scores aggregated

    def extended(
        self, task: GenerationTask, prompt_format: PromptFormat, *, finished: bool | None = None
    ) -> Path:
        """This path with the task's generation appended. Splitting (rather than taking the text
        as one step) tolerates a worker that ignores stop words and an empty step."""
        steps = self.steps + tuple(prompt_format.split_steps(task.output_text or ""))
        done = task.finish_reason != FinishReason.STOP_WORD if finished is None else finished
        answer = extract_answer(prompt_format.join_steps(list(steps))) if done else None
        return Path(steps, done, self.output_tokens + task.num_output_tokens, answer)

    def judged(self) -> float:
        """The aggregated score, once the PRM has judged this path."""
        if self.score is None:
            raise ValueError("this path has not been scored yet")
        return self.score

    def text(self, prompt_format: PromptFormat) -> str:
        return prompt_format.join_steps(list(self.steps))

    def to_candidate(self, prompt_format: PromptFormat) -> Candidate:
        return Candidate(
            self.text(prompt_format), self.answer, self.output_tokens, self.score, self.step_scores
        )

    def to_json(self, prompt_format: PromptFormat) -> dict[str, Any]:
        return {
            "text": self.text(prompt_format),
            "score": self.score,
            "step_scores": self.step_scores,
            "finished": self.finished,
            "answer": self.answer.text if self.answer else None,
        }


@dataclass
class StepwiseSearch:
    question: str
    params: RewardGuidedParams
    prompt_format: PromptFormat
    finished: list[Path] = field(default_factory=list)  # solutions found so far, in the order found
    log: list[dict[str, Any]] = field(default_factory=list)  # one record per search step

    # -- generation -------------------------------------------------------------------------

    def expand(
        self, parents: Sequence[Path], children: Sequence[int]
    ) -> Generator[list[GenerationTask], Any, list[list[Path]]]:
        """Give ``parents[i]`` ``children[i]`` one-step continuations, all generated in one yield;
        return the children grouped by parent."""
        repeated = [parent for parent, count in zip(parents, children) for _ in range(count)]
        flat = yield from self._continue(repeated, phase="expand", one_step=True)
        groups, start = [], 0
        for count in children:
            groups.append(flat[start : start + count])
            start += count
        return groups

    def complete(
        self, paths: Sequence[Path], *, greedy: bool, phase: str = "complete"
    ) -> Generator[Any, Any, list[Path]]:
        """Generate each path to the end (no stop word) and score the solutions: rollouts, or the
        fallback when the step budget ran out before any path finished."""
        done = yield from self._continue(paths, phase=phase, one_step=False, greedy=greedy)
        yield from self.score(done)
        return done

    def _continue(
        self, paths: Sequence[Path], *, phase: str, one_step: bool, greedy: bool = False
    ) -> Generator[list[GenerationTask], Any, list[Path]]:
        stop_words = [self.prompt_format.step_delimiter] if one_step else None
        tasks = [
            self.params.task(
                self.prompt_format.prompt(self.question, path.steps),
                phase=phase,
                stop_words=stop_words,
                greedy=greedy,
            )
            for path in paths
        ]
        if tasks:
            yield tasks
        return [
            path.extended(task, self.prompt_format, finished=None if one_step else True)
            for path, task in zip(paths, tasks)
        ]

    # -- scoring ----------------------------------------------------------------------------

    def score(self, paths: Sequence[Path]) -> Generator[Any, Any, list[float]]:
        return (
            yield from score_solutions(
                self.question, paths, lambda path: path.steps, self.params.aggregation
            )
        )

    def expand_and_score(
        self, parents: Sequence[Path], children: Sequence[int]
    ) -> Generator[Any, Any, list[list[Path]]]:
        """One search step's work: one generation yield, then one reward request for every child."""
        groups = yield from self.expand(parents, children)
        yield from self.score([child for group in groups for child in group])
        return groups

    def beam(
        self, width: int, levels: int, branching: Callable[[list[Path]], list[int]]
    ) -> Generator[Any, Any, list[Path]]:
        """A beam over steps from the empty solution: each level gives the live paths
        ``branching(paths)`` children each, scores them all, keeps the ``width`` best children
        of all parents (a kept path that finished leaves the beam as a solution). Stops when the
        beam is empty or after ``levels``; returns the paths still unfinished."""
        live = [Path()]
        for level in range(1, levels + 1):
            if not live:
                break
            groups = yield from self.expand_and_score(live, branching(live))
            candidates = [child for group in groups for child in group]
            kept = top_indexes([child.score for child in candidates], width)
            yield from self.report(level, candidates, kept=kept)
            live = self.retire_finished([candidates[index] for index in kept])
        return live

    # -- bookkeeping ------------------------------------------------------------------------

    def retire_finished(self, paths: Sequence[Path]) -> list[Path]:
        """Move finished paths to the solutions; return the ones still going."""
        self.finished.extend(path for path in paths if path.finished)
        return [path for path in paths if not path.finished]

    def report(
        self, step: int, candidates: Sequence[Path], **extra: Any
    ) -> Generator[Progress, Any, None]:
        """Log a search step (its candidates with their scores, plus method-specific fields such
        as ``kept``) and stream it, followed by the current best."""
        record = {
            "step": step,
            "candidates": [path.to_json(self.prompt_format) for path in candidates],
            **extra,
        }
        self.log.append(record)
        yield Progress(EventKind.STEP, record)
        pool = self.finished or [path for path in candidates if path.score is not None]
        if pool:
            leader = pool[best_index([path.score for path in pool])]
            yield Progress(EventKind.BEST, self._best_event(leader, step))

    def _best_event(self, path: Path, step: int | None) -> dict[str, Any]:
        return {
            "step": step,
            "answer": path.answer.text if path.answer else None,
            "score": path.score,
            "finished": path.finished,
        }

    def conclude(self, unfinished: Sequence[Path], **details: Any) -> Generator[Any, Any, Outcome]:
        """The best finished path by aggregated PRM score (earliest on a tie). When none finished,
        the best partial path is completed greedily first, so there is always an answer."""
        if not self.finished and unfinished:
            best_partial = unfinished[best_index([path.score or 0.0 for path in unfinished])]
            self.finished.extend((yield from self.complete([best_partial], greedy=True)))
        details = {"steps": self.log, **details}
        if not self.finished:
            return Outcome(text="", answer=None, details=details)
        chosen = best_index([path.score for path in self.finished])
        details["chosen"] = chosen
        yield Progress(EventKind.BEST, self._best_event(self.finished[chosen], None))
        candidates = [path.to_candidate(self.prompt_format) for path in self.finished]
        return Outcome(
            text=candidates[chosen].text,
            answer=candidates[chosen].answer,
            candidates=candidates,
            details=details,
        )


R = TypeVar("R", bound=RewardGuidedParams)


class StepwiseController(Controller[R]):
    """Base of the step-wise search methods: their knobs, the prompt format, one search
    per question."""

    def start(self, question: str) -> StepwiseSearch:
        return StepwiseSearch(question, self.params, self.prompt_format)
