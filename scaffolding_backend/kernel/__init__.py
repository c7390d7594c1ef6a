"""The runtime kernel: tasks, the controller protocol, the runtime and its account.

Its public names are imported from here; ``derive_seed`` is the replay contract (a
sampled task's seed depends only on the request seed and the task's place in the
controller's program), which a client can use to reproduce a request's samples."""

from .account import Account, Status
from .controller import (
    Answer,
    Candidate,
    Controller,
    EventKind,
    Outcome,
    Parallel,
    Process,
    Progress,
)
from .params import Caps, InvalidParameter, MethodParams
from .prompts import PromptFormat
from .runtime import Limits, RequestFailed, Runtime, Worker, WorkerError, derive_seed
from .tasks import FinishReason, GenerationTask, RewardTask, Task

__all__ = [
    "Account",
    "Answer",
    "Candidate",
    "Caps",
    "Controller",
    "EventKind",
    "FinishReason",
    "GenerationTask",
    "InvalidParameter",
    "Limits",
    "MethodParams",
    "Outcome",
    "Parallel",
    "Process",
    "Progress",
    "PromptFormat",
    "RequestFailed",
    "RewardTask",
    "Runtime",
    "Status",
    "Task",
    "Worker",
    "WorkerError",
    "derive_seed",
]
