"""The controller protocol (after TensorRT-LLM scaffolding) and what a controller returns.

``Controller.process(question)`` is a generator. It may yield

* a ``list`` of tasks: the runtime runs them concurrently and resumes the
  generator (the list comes back, its tasks filled in);
* a :class:`Settle`: tasks run concurrently until the controller's rule says the rest are
  not needed; those are stopped;
* a :class:`Parallel` group of sub-controller generators: run concurrently, the
  generator is resumed with the list of their return values;
* a :class:`Progress` event: forwarded to the client (streaming) at once.

It returns an :class:`Outcome`. Methods compose with ``yield from``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from .params import MethodParams
from .prompts import PromptFormat
from .tasks import Task


class EventKind(str, enum.Enum):
    """What a streamed progress event reports."""

    SAMPLE = "sample"  # one sampled solution finished
    TALLY = "tally"  # the final vote
    STEP = "step"  # one step of a search, with its scored candidates
    BEST = "best"  # the current (or final) leader of a search
    PROBE = "probe"  # the answer a chain would give if stopped now (early exit)
    TOKENS = "tokens"  # new text of a candidate answer, as the engine writes it


@dataclass
class Parallel:
    branches: list[Process]


@dataclass
class Settle:
    """Run ``tasks`` concurrently; after each one finishes, ``settled(finished tasks)`` says
    whether the rest are still needed. Once it says no, the others are stopped (a stopped
    generation is not ``complete``) and the controller resumes with the whole list."""

    tasks: Sequence[Task]
    settled: Callable[[list[Task]], bool]


@dataclass
class Progress:
    kind: EventKind
    data: dict[str, Any]


@dataclass(frozen=True)
class Answer:
    """An extracted final answer: ``text`` for people and JSON, ``parsed`` for the
    equivalence check of the method library (``reasoning.answers``)."""

    text: str
    parsed: tuple[Any, ...]
    source: str  # "boxed", "answer_is" or "last_number"


@dataclass
class Candidate:
    text: str
    answer: Answer | None
    output_tokens: int = 0
    score: float | None = None
    step_scores: list[float] | None = None
    votes: int | None = None

    def to_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "answer": self.answer.text if self.answer else None,
            "output_tokens": self.output_tokens,
        }
        for key in ("score", "step_scores", "votes"):
            if getattr(self, key) is not None:
                record[key] = getattr(self, key)
        record["text"] = self.text
        return record


@dataclass
class Outcome:
    """What a method decided: the final text, its answer, and how it got there."""

    text: str
    answer: Answer | None
    candidates: list[Candidate] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)  # method-specific: tally, steps, ...


Yielded = Sequence[Task] | Settle | Parallel | Progress  # a task list at run time
Process = Generator[Yielded, Any, Outcome]


P = TypeVar("P", bound=MethodParams)


class Controller(Generic[P]):
    """Base class: subclasses name themselves, declare their ``Params`` dataclass (the
    type argument too) and implement :meth:`process` as a generator."""

    name: ClassVar[str] = "controller"
    Params: ClassVar[type[MethodParams]] = MethodParams

    def __init__(self, params: P, prompt_format: PromptFormat):
        self.params: P = params
        self.prompt_format = prompt_format

    def process(self, question: str) -> Process:  # pragma: no cover - interface
        raise NotImplementedError
