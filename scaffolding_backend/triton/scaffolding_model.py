"""The ``scaffolding`` model: hosts one controller per request and fans its tasks
out to co-hosted models over BLS.

The same class serves two entries: ``scaffolding`` (decoupled: one instance runs
many requests concurrently and streams progress events over gRPC) and
``scaffolding_unary`` (plain request/response, for HTTP ``/infer``).
"""

from __future__ import annotations

import asyncio
import gc
import json
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import triton_python_backend_utils as pb_utils

from ..kernel.account import Account, Status
from ..kernel.controller import Progress
from ..kernel.params import InvalidParameter
from ..kernel.runtime import Limits, RequestFailed, Runtime, Worker, WorkerError
from ..kernel.tasks import GENERATION, PROGRAM_GENERATION, REWARD, SANDBOX
from ..service.config import ConfigError, ScaffoldingConfig
from ..service.job import Job, parse_job
from ..workers.context import RequestContext, SubRequestSlots
from ..workers.generation import (
    generation_worker_factory,
    program_generation_worker_factory,
)
from ..workers.sandbox_bls import BLSSandboxWorker
from ..workers.triton_bls import BLSRewardWorker, ensure_bls_executor, release_retired
from . import io
from .metrics import ScaffoldingMetrics, Throttled
from .watchdog import LoopWatchdog

# a client that leaves stops the sub-requests of its request within this: one round trip to the
# server per request and poll, which the sub-requests it saves are worth (at 0.2 s, a cancelled
# vote let a fifth more of its samples finish)
CLIENT_POLL_S = 0.05
# threads that send decoupled responses (io.SendLanes); each request keeps to one
SEND_LANES = 4


class ClientWatch:
    """Finds the requests whose client left, polling from a thread of its own.

    ``request.is_cancelled()`` is a blocking round trip to the server (python_backend
    ``pb_cancel.cc``, release r24.10; it releases the GIL while it waits). Polled from the
    event loop, once per request every ``CLIENT_POLL_S``, those waits stalled the loop that
    sends every sub-request: an eighth of its time at 16 requests in flight. Here they
    stall only this thread, and ``on_leave`` runs on the loop.

    A poll holds the lock, so once ``watch``'s returned function has returned, no poll of
    that request is under way or to come: the server frees a request (and a decoupled
    request's response factory, which the poll reads) once its response has been sent."""

    def __init__(self) -> None:
        self._watched: dict[int, tuple[Any, Callable[[], None]]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()

    def watch(self, request: Any, on_leave: Callable[[], None]) -> Callable[[], None]:
        """Call ``on_leave`` on the running loop once ``request``'s client has left; returns
        the function that stops watching."""
        loop = asyncio.get_running_loop()
        key = id(request)

        def left() -> None:
            if not loop.is_closed():  # the model is being unloaded
                loop.call_soon_threadsafe(on_leave)

        with self._lock:
            self._watched[key] = (request, left)
            if self._thread is None:
                self._thread = threading.Thread(target=self._poll, name="client-watch", daemon=True)
                self._thread.start()
        return lambda: self._forget(key)

    def _forget(self, key: int) -> None:
        with self._lock:
            self._watched.pop(key, None)

    def _poll(self) -> None:
        while not self._closed.wait(CLIENT_POLL_S):
            with self._lock:
                keys = list(self._watched)
            for key in keys:
                with self._lock:
                    entry = self._watched.get(key)
                    if entry is None or not entry[0].is_cancelled():
                        continue
                    del self._watched[key]
                entry[1]()

    def close(self) -> None:
        self._closed.set()


def error_code(failure: RequestFailed) -> int:
    """The Triton error code a failed request gets (pb_utils' codes exist only once the
    stub runs)."""
    if failure.client_error:
        return pb_utils.TritonError.INVALID_ARG
    return {
        Status.BUDGET: pb_utils.TritonError.INVALID_ARG,
        Status.CANCELLED: pb_utils.TritonError.CANCELLED,
        Status.DEADLINE: pb_utils.TritonError.UNAVAILABLE,
    }.get(failure.reason, pb_utils.TritonError.INTERNAL)


class ScaffoldingModel:
    def initialize(self, args: dict[str, Any]) -> None:
        model_config = json.loads(args["model_config"])
        self.name = args["model_name"]
        try:
            self.config = ScaffoldingConfig.from_model_config(model_config)
            self.generation_worker = generation_worker_factory(
                self.config, args["model_repository"]
            )
            self.program_generation_worker = program_generation_worker_factory(
                self.config, args["model_repository"]
            )
        except ConfigError as error:
            raise pb_utils.TritonModelException(f"{self.name}: {error}") from None
        self.decoupled = pb_utils.using_decoupled_model_transaction_policy(model_config)
        self.metrics = ScaffoldingMetrics(self.name)
        self.write_metrics = Throttled(self._write_metrics)
        self.active = 0  # requests this instance is serving
        self.slots = SubRequestSlots(self.config.sub_request_slots, on_change=self.write_metrics)
        self.client_watch = ClientWatch()
        self.send_lanes = io.SendLanes(SEND_LANES)
        self.watchdog = LoopWatchdog(self.config.loop_stall_exit_s)
        pb_utils.Logger.log_info(f"{self.name}: decoupled={self.decoupled} {self.config}")
        # what is loaded by now (math-verify and sympy: about 80,000 objects) lives as long as
        # the stub: kept out of the collector's full passes, which otherwise rescan it (14 ms
        # each) while sub-requests wait
        gc.freeze()

    async def execute(self, requests: list[Any]) -> list[Any] | None:
        ensure_bls_executor(self.config.bls_threads)
        self.watchdog.start()
        if self.decoupled:
            await asyncio.gather(*(self._serve_streaming(request) for request in requests))
            return None
        return list(
            await asyncio.gather(*(self._serve_safely(request, None) for request in requests))
        )

    async def _serve_streaming(self, request: Any) -> None:
        sender = self.send_lanes.sender(request)
        response = await self._serve_safely(request, sender)
        await sender.send_final(response)

    async def _serve_safely(self, request: Any, sender: Any) -> Any:
        """Always a response: a bug in a controller fails its request, never the batch or
        the stub."""
        try:
            return await self._serve(request, sender)
        except Exception:
            return io.unexpected_error(self.name)

    def finalize(self) -> None:
        self.watchdog.stop()  # first: unloading may take longer than a stall
        gc.unfreeze()  # the metrics' release below collects what refers to them
        self.client_watch.close()
        self.send_lanes.close()
        self.write_metrics.cancel()
        self.metrics.close()
        release_retired()

    def _write_metrics(self) -> None:
        self.metrics.set_in_flight(self.active, self.slots.in_flight)
        self.metrics.flush()

    async def _serve(self, request: Any, sender: Any) -> Any:
        if self.active >= self.config.max_concurrent_requests:
            self.metrics.request_done("none", "busy", None, 0.0)
            self.write_metrics()
            message = (
                f"busy: {self.active} requests in flight in this instance "
                f"(max_concurrent_requests={self.config.max_concurrent_requests}); retry later"
            )
            return io.error_response(RuntimeError(message), pb_utils.TritonError.UNAVAILABLE)
        self.active += 1
        self.write_metrics()
        try:
            return await self._admitted(request, sender)
        finally:
            self.active -= 1
            self.write_metrics()

    async def _admitted(self, request: Any, sender: Any) -> Any:
        started = time.perf_counter()
        try:
            job = parse_job(
                io.input_arrays(request),
                request.parameters(),
                self.config,
                decoupled=self.decoupled,
            )
        except InvalidParameter as error:
            self.metrics.request_done(
                "invalid", "invalid_argument", None, time.perf_counter() - started
            )
            return io.error_response(error)

        client_left = asyncio.Event()
        # events go only to a client that asked for them and for the output they come in
        streams = job.stream and sender is not None and "event" in request.requested_output_names()

        def on_progress(event: Progress) -> None:
            # nothing for a client that left (see io.send_final); the watcher below finds
            # out (is_cancelled is a round trip to the server: not once per token)
            if streams and not client_left.is_set():
                payload = json.dumps({"kind": event.kind.value, **event.data})
                sender.send(
                    pb_utils.InferenceResponse(
                        output_tensors=[io.string_tensor("event", [payload])]
                    )
                )

        run = asyncio.ensure_future(
            Runtime(self._workers(request, job)).run(
                job.controller(self.config).process(job.question),
                method=job.method,
                seed=job.seed,
                limits=Limits(deadline_s=job.deadline_s, max_tasks=self.config.max_tasks),
                on_progress=on_progress,
                stream_tokens=job.stream_tokens,
            )
        )

        def on_leave() -> None:
            if not run.done():
                client_left.set()
                run.cancel()

        stop_watching = self.client_watch.watch(request, on_leave)
        try:
            account = await run
        except RequestFailed as failure:
            self.metrics.request_done(
                job.method, failure.reason.value, failure.account, time.perf_counter() - started
            )
            return io.error_response(
                RuntimeError(self._failure_message(failure)), error_code(failure)
            )
        finally:
            stop_watching()
        self.metrics.request_done(
            job.method, Status.OK.value, account, time.perf_counter() - started
        )
        return io.response(request, self._final_outputs(account))

    def _workers(self, request: Any, job: Job) -> dict[str, Worker]:
        context = RequestContext.within(job.deadline_s, trace=request.trace(), slots=self.slots)
        return {
            GENERATION: self.generation_worker(context),
            PROGRAM_GENERATION: self.program_generation_worker(context),
            REWARD: BLSRewardWorker(job.reward_model, self.config.prompt_format, context),
            SANDBOX: BLSSandboxWorker(context),
        }

    def _failure_message(self, failure: RequestFailed) -> str:
        account = failure.account.to_json()
        spent = {
            key: account[key] for key in ("tasks", "sub_requests", "output_tokens", "wall_seconds")
        }
        message = f"{failure.reason.value}: {failure} (spent so far: {json.dumps(spent)})"
        cause = failure.__cause__
        if cause is not None and not isinstance(cause, WorkerError):  # a bug: details in the log
            reference = io.log_reference()
            details = "".join(traceback.format_exception(type(cause), cause, cause.__traceback__))
            pb_utils.Logger.log_error(f"{self.name}: worker failed [{reference}]:\n{details}")
            message += f" [log {reference}]"
        elif failure.reason is Status.WORKER and not failure.client_error:
            # a sub-request failed on the server's side: the operator's log says so too,
            # as the vLLM backend's does
            pb_utils.Logger.log_warn(f"{self.name}: request failed: {message}")
        return message

    @staticmethod
    def _final_outputs(account: Account) -> list[Any]:
        outcome = account.outcome
        assert outcome is not None  # an account that finished OK has its outcome
        answer = outcome.answer.text if outcome.answer else ""
        return [
            io.string_tensor("text_output", [outcome.text]),
            io.string_tensor("answer", [answer]),
            io.string_tensor("account", [json.dumps(account.to_json())]),
        ]
