"""The ``sandbox`` model: runs an untrusted Python program, isolated, and says how it went.

``code`` STRING [1] (+ optional ``stdin`` STRING [1]) -> ``stdout``, ``stderr`` (STRING),
``exit_status`` INT32 (the exit code, -N for signal N), ``wall_s``, ``cpu_s`` (FP32),
``killed_reason`` STRING ("" when the program ended by itself; else timeout, cpu, memory,
output_limit, file_size, signal). How a run is isolated: ``scaffolding_backend.sandbox``.

Decoupled, so that one instance runs many programs at once: each request's run goes to a
thread pool of ``concurrent_runs`` threads and its response is sent when that run ends, so
a program that sleeps to its deadline holds up no other. A refused input is an INVALID_ARG
error naming the field; a sandbox that cannot isolate a run fails that request (INTERNAL)
and the model refuses to load where its isolation does not work at all.
"""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from ..kernel.params import InvalidParameter
from ..sandbox import KillReason, RunResult, SandboxUnavailable
from ..service.config import ConfigError, SandboxConfig
from ..service.values import Arrays, one_value
from . import io


def parse_run(arrays: Arrays, config: SandboxConfig) -> tuple[bytes, bytes]:
    """The program and its standard input, as bytes, or InvalidParameter naming the field."""
    code = one_value(arrays, "code")
    if not isinstance(code, str):
        raise InvalidParameter("code", "is required (one UTF-8 string)")
    stdin = one_value(arrays, "stdin")
    if stdin is not None and not isinstance(stdin, str):
        raise InvalidParameter("stdin", "must be one UTF-8 string")
    code_bytes = code.encode()
    if not code.strip():
        raise InvalidParameter("code", "must not be empty")
    if len(code_bytes) > config.max_code_bytes:
        raise InvalidParameter(
            "code", f"at most max_code_bytes={config.max_code_bytes} bytes, got {len(code_bytes)}"
        )
    stdin_bytes = (stdin or "").encode()
    if len(stdin_bytes) > config.max_stdin_bytes:
        raise InvalidParameter(
            "stdin",
            f"at most max_stdin_bytes={config.max_stdin_bytes} bytes, got {len(stdin_bytes)}",
        )
    return code_bytes, stdin_bytes


class SandboxModel:
    def initialize(self, args: dict[str, Any]) -> None:
        self.name = args["model_name"]
        try:
            self.config = SandboxConfig.from_model_config(json.loads(args["model_config"]))
            self.sandbox = self.config.sandbox()
            self.sandbox.check()
        except (ConfigError, SandboxUnavailable) as error:
            raise pb_utils.TritonModelException(f"{self.name}: {error}") from None
        self.pool = ThreadPoolExecutor(self.config.concurrent_runs, thread_name_prefix="sandbox")
        pb_utils.Logger.log_info(
            f"{self.name}: isolation={self.config.isolation} python={self.sandbox.python} "
            f"{self.config}"
        )

    async def execute(self, requests: list[Any]) -> None:
        await asyncio.gather(*(self._serve(request) for request in requests))

    async def _serve(self, request: Any) -> None:
        sender = request.get_response_sender()
        try:
            response = await self._respond(request)
        except Exception:
            response = io.unexpected_error(self.name)
        io.send_final(request, sender, response)

    async def _respond(self, request: Any) -> Any:
        try:
            code, stdin = parse_run(io.input_arrays(request), self.config)
        except InvalidParameter as error:
            return io.error_response(error)
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(self.pool, self.sandbox.run, code, stdin)
        if result.killed_reason is KillReason.SANDBOX_ERROR:
            reference = io.log_reference()
            pb_utils.Logger.log_error(f"{self.name}: sandbox failed [{reference}]: {result.stderr}")
            message = f"the sandbox could not isolate this run [log {reference}]"
            return io.error_response(RuntimeError(message), pb_utils.TritonError.INTERNAL)
        return io.response(request, self._outputs(result))

    @staticmethod
    def _outputs(result: RunResult) -> list[Any]:
        return [
            io.string_tensor("stdout", [result.stdout]),
            io.string_tensor("stderr", [result.stderr]),
            pb_utils.Tensor("exit_status", np.array([result.exit_status], dtype=np.int32)),
            pb_utils.Tensor("wall_s", np.array([result.wall_s], dtype=np.float32)),
            pb_utils.Tensor("cpu_s", np.array([result.cpu_s], dtype=np.float32)),
            io.string_tensor("killed_reason", [result.killed_reason.value]),
        ]

    def finalize(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
