"""Sampling fan-out shared by every method that draws several solutions."""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass

from ..kernel.controller import Candidate, Progress
from ..kernel.params import InvalidParameter, MethodParams
from ..kernel.prompts import PromptFormat
from ..kernel.tasks import GenerationTask, Task, generation
from .answers import extract_answer


@dataclass
class SamplingParams(MethodParams):
    """Knobs every sampling method shares."""

    max_tokens: int = 256
    temperature: float = 0.8
    top_p: float = 1.0
    top_k: int = 0

    def check(self) -> None:
        if not 0 < self.top_p <= 1:
            raise InvalidParameter("top_p", f"must be in (0, 1], got {self.top_p}")

    def task(
        self, prompt: str, *, phase: str, stop_words: list[str] | None = None, greedy: bool = False
    ) -> GenerationTask:
        return generation(
            prompt,
            max_tokens=self.max_tokens,
            temperature=0.0 if greedy else self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            stop_words=list(stop_words or []),
            phase=phase,
        )


def candidate_from(task: GenerationTask) -> Candidate:
    text = task.output_text or ""
    return Candidate(text=text, answer=extract_answer(text), output_tokens=task.num_output_tokens)


def sample_candidates(
    question: str,
    count: int,
    params: SamplingParams,
    prompt_format: PromptFormat,
    *,
    on_candidate: Callable[[int, Candidate], Progress | None] | None = None,
) -> Generator[list[GenerationTask], None, list[Candidate]]:
    """Draw ``count`` independent solutions concurrently; each becomes a Candidate.

    ``on_candidate(index, candidate)`` runs as each sample finishes, so a method
    can stream what it learns before the whole fan-out is done."""
    tasks = [params.task(prompt_format.prompt(question), phase="sample") for _ in range(count)]
    candidates: list[Candidate | None] = [None] * count

    def finished(index: int) -> Callable[[Task], Progress | None]:
        def record(task: Task) -> Progress | None:
            assert isinstance(task, GenerationTask)
            candidate = candidates[index] = candidate_from(task)
            return on_candidate(index, candidate) if on_candidate else None

        return record

    for index, task in enumerate(tasks):
        task.on_done = finished(index)
        task.stream_as = f"sample {index}"
    yield tasks
    return [
        candidate if candidate is not None else candidate_from(task)
        for candidate, task in zip(candidates, tasks)
    ]
