"""Sampling that stops once a method's rule says the answer is settled, shared by the
early-exit methods (adaptive consistency, DeepConf).

Samples go out in waves of ``wave`` at a time. After each sample ends, the rule is asked
about the samples resolved so far **in index order** (a sample is resolved when it
finished, or when the method discarded it part-way): the decision therefore depends only
on the samples' own texts, which depend only on their seeds, never on which sample the
engine happened to finish first, so a request replays exactly. Once the rule is settled,
the samples still running are stopped and the remaining waves never start. What the
stopped samples had cost still counts in the account."""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

from ..kernel.controller import Candidate, Settle
from ..kernel.prompts import PromptFormat
from ..kernel.tasks import GenerationTask, Task
from .sampling import SamplingParams, candidate_from


@dataclass
class Sample:
    """One sample of an early-exit method: its task and, once resolved, its candidate (or
    ``discarded``)."""

    index: int
    task: GenerationTask
    discarded: bool = False  # the method stopped it part-way and does not count it
    candidate: Candidate | None = None

    @property
    def resolved(self) -> bool:
        return self.discarded or self.task.complete


@dataclass
class EarlyStop:
    """The samples drawn so far and whether the rule settled."""

    samples: list[Sample] = field(default_factory=list)
    checked: int = 0  # prefix lengths the rule has been asked about
    decided: int | None = None  # the prefix length on which the rule settled

    @property
    def settled(self) -> bool:
        return self.decided is not None

    def prefix(self) -> list[Sample]:
        """The resolved samples before the first unresolved one (once settled: the prefix
        the rule settled on, whatever finished after it)."""
        resolved: list[Sample] = []
        for sample in self.samples:
            if not sample.resolved or len(resolved) == self.decided:
                break
            resolved.append(sample)
        return resolved

    def counted(self) -> list[Sample]:
        """The samples the method decides on: resolved, in order, not discarded."""
        return [sample for sample in self.prefix() if not sample.discarded]


def sample_until(
    question: str,
    params: SamplingParams,
    prompt_format: PromptFormat,
    *,
    samples: int,
    wave: int,
    settled: Callable[[list[Sample]], bool],
    prepare: Callable[[Sample], None] | None = None,
) -> Generator[Any, Any, EarlyStop]:
    """Draw up to ``samples`` solutions, ``wave`` at a time, until ``settled(counted
    samples)`` is true. ``prepare(sample)`` may set the task up before it is sent (log-probs,
    an ``on_chunk`` that sets ``sample.discarded`` and returns True to stop it)."""
    state = EarlyStop()

    def rule(_finished: list[Task]) -> bool:
        if state.settled:
            return True
        prefix = state.prefix()
        for sample in prefix:
            if sample.candidate is None and not sample.discarded:
                sample.candidate = candidate_from(sample.task)
        # every prefix length in turn, so the decision never depends on how many samples
        # happened to finish together
        while state.checked < len(prefix):
            state.checked += 1
            if settled([s for s in prefix[: state.checked] if not s.discarded]):
                state.decided = state.checked
                break
        return state.settled

    while len(state.samples) < samples and not state.settled:
        size = min(wave, samples - len(state.samples))
        batch = []
        for _ in range(size):
            task = params.task(prompt_format.prompt(question), phase="sample")
            sample = Sample(len(state.samples), task)
            task.stream_as = f"sample {sample.index}"
            if prepare is not None:
                prepare(sample)
            state.samples.append(sample)
            batch.append(task)
        yield Settle(batch, rule)
        rule([])  # the wave ended: decide on everything it resolved
    return state
