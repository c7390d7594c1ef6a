"""The ``sandbox`` worker: each sandbox task goes to the co-hosted ``sandbox`` model over
BLS (decoupled: one response per run) and comes back with what the program did. Only
importable inside a Triton Python-backend stub."""

from __future__ import annotations

import asyncio

import numpy as np

from ..kernel.runtime import TaskDone
from ..kernel.tasks import SandboxTask, Task
from .context import RequestContext
from .contracts import TritonRequest
from .triton_bls import SubRequestFailed, _inference_request, _outputs, send_decoupled

SANDBOX_MODEL = "sandbox"
OUTPUTS = ("stdout", "stderr", "exit_status", "wall_s", "cpu_s", "killed_reason")


def _text(outputs: dict[str, np.ndarray], name: str) -> str:
    value = outputs[name].reshape(-1)[0]
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


class BLSSandboxWorker:
    def __init__(self, context: RequestContext, model: str = SANDBOX_MODEL):
        self.model = model
        self.context = context

    async def _run_one(self, task: SandboxTask, on_done: TaskDone) -> None:
        request = TritonRequest(
            inputs={
                "code": np.array([task.code], dtype=np.object_),
                "stdin": np.array([task.stdin], dtype=np.object_),
            },
            outputs=OUTPUTS,
        )
        async with self.context.slot():
            responses = await send_decoupled(_inference_request(self.model, request, self.context))
            replies = await asyncio.get_running_loop().run_in_executor(None, responses.read_all)
        outputs: dict[str, np.ndarray] = {}
        for reply in replies:  # one response with outputs, and the final flag (maybe alone)
            outputs = _outputs(reply, self.model) or outputs
        if not outputs:
            raise SubRequestFailed(f"model '{self.model}' sent no response with outputs")
        task.stdout = _text(outputs, "stdout")
        task.stderr = _text(outputs, "stderr")
        task.exit_status = int(outputs["exit_status"].reshape(-1)[0])
        task.wall_s = float(outputs["wall_s"].reshape(-1)[0])
        task.cpu_s = float(outputs["cpu_s"].reshape(-1)[0])
        task.killed_reason = _text(outputs, "killed_reason")
        on_done(task)

    async def run(self, tasks: list[Task], on_done: TaskDone) -> int:
        runs = [task for task in tasks if isinstance(task, SandboxTask)]
        await asyncio.gather(*(self._run_one(task, on_done) for task in runs))
        return len(runs)
