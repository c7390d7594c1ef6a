"""The controller protocol (after TensorRT-LLM scaffolding).

``Controller.process(question)`` is a generator. It may yield

* a ``list`` of tasks: the runtime runs them concurrently and resumes the
  generator (the list comes back, its tasks filled in);
* a :class:`Parallel` group of sub-controller generators: run concurrently, the
  generator is resumed with the list of their return values;
* a :class:`Progress` event: forwarded to the client (streaming) at once.

It returns a :class:`Outcome`. Methods compose with ``yield from``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generator, Union

from .answers import Answer
from .params import MethodParams
from .prompts import PromptFormat
from .tasks import Task


@dataclass
class Parallel:
    branches: list[Generator]


@dataclass
class Progress:
    kind: str  # "sample", "tally", "step", "best", ...
    data: dict[str, Any]


@dataclass
class Candidate:
    text: str
    answer: Answer | None
    output_tokens: int = 0
    score: float | None = None
    step_scores: list[float] | None = None
    votes: int | None = None

    def to_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {"answer": self.answer.text if self.answer else None, "output_tokens": self.output_tokens}
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
    details: dict[str, Any] = field(default_factory=dict)  # method-specific: tally, search steps, ...


Yielded = Union[list[Task], Parallel, Progress]
Process = Generator[Yielded, Any, Outcome]


class Controller:
    """Base class: subclasses name themselves, declare their ``Params`` dataclass and
    implement :meth:`process` as a generator."""

    name = "controller"
    Params: type[MethodParams] = MethodParams

    def __init__(self, params: MethodParams, prompt_format: PromptFormat):
        self.params = params
        self.prompt_format = prompt_format

    def process(self, question: str) -> Process:  # pragma: no cover - interface
        raise NotImplementedError
