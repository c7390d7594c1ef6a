"""The per-request account: what a request cost and how it ended."""

from __future__ import annotations

import enum
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from .controller import Outcome
from .tasks import GenerationTask, Task


class Status(str, enum.Enum):
    """How a request ended (``RUNNING`` until it does)."""

    RUNNING = "running"
    OK = "ok"
    DEADLINE = "deadline_exceeded"
    BUDGET = "budget"
    CANCELLED = "cancelled"
    WORKER = "worker"  # a worker (a sub-request) failed


@dataclass
class Account:
    method: str
    seed: int
    status: Status = Status.RUNNING
    tasks: int = 0
    stopped_tasks: int = (
        0  # tasks stopped before their end because the method no longer needed them
    )
    sub_requests: Counter[str] = field(default_factory=Counter)
    prompt_tokens: int = 0
    output_tokens: int = 0
    # where the token counts came from, by generation task:
    # "engine", "log_probs", "tokenizer" or "none"
    token_counts_from: Counter[str] = field(default_factory=Counter)
    phase_seconds: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    wall_seconds: float = 0.0
    outcome: Outcome | None = None

    @property
    def total_sub_requests(self) -> int:
        return sum(self.sub_requests.values())

    def record_tasks(self, tasks: list[Task]) -> None:
        for task in tasks:
            if isinstance(task, GenerationTask):
                self.prompt_tokens += task.num_prompt_tokens
                self.output_tokens += task.num_output_tokens
                self.token_counts_from[task.token_counts_from] += 1

    def to_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "method": self.method,
            "seed": self.seed,
            "status": self.status.value,
            "tasks": self.tasks,
            "stopped_tasks": self.stopped_tasks,
            "sub_requests": self.total_sub_requests,
            "sub_requests_by_model": dict(self.sub_requests),
            "prompt_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens,
            "token_counts_from": dict(self.token_counts_from),
            "wall_seconds": round(self.wall_seconds, 4),
            "phase_seconds": {phase: round(s, 4) for phase, s in self.phase_seconds.items()},
        }
        if self.outcome is not None:
            record["answer"] = self.outcome.answer.text if self.outcome.answer else None
            record["candidates"] = [c.to_json() for c in self.outcome.candidates]
            record.update(self.outcome.details)
        return record
