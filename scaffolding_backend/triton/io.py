"""Between Triton's Python-backend objects and plain Python: input tensors out of a
request, error responses, and the ``execute`` of a dynamically batched model.

Every refusal is an :class:`InvalidParameter` naming the field, which becomes an
INVALID_ARG error for that request alone.
"""

from __future__ import annotations

import asyncio
import itertools
import traceback
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from ..kernel.params import INVALID_INPUT, InvalidParameter
from ..service.batching import run_isolated


def log_reference() -> str:
    """A short id that ties a client's error message to the server log's details."""
    return uuid.uuid4().hex[:12]


def unexpected_error(model_name: str) -> Any:
    """The response to a request that met a bug (call it in an ``except`` block): the
    traceback goes to the server log, the client gets INTERNAL and the log reference."""
    reference = log_reference()
    pb_utils.Logger.log_error(
        f"{model_name}: request failed [{reference}]:\n{traceback.format_exc()}"
    )
    message = f"internal error; the server log has the details [log {reference}]"
    return error_response(RuntimeError(message), pb_utils.TritonError.INTERNAL)


def input_arrays(request: Any) -> dict[str, np.ndarray]:
    """Every input the request carries, by name."""
    return {tensor.name(): tensor.as_numpy() for tensor in request.inputs()}


def string_tensor(name: str, values: Sequence[str]) -> Any:
    return pb_utils.Tensor(name, np.array(values, dtype=np.object_))


def requested(request: Any, outputs: Sequence[Any]) -> list[Any]:
    """The output tensors the request asked for, and no others. A decoupled model must never
    send more: the Python backend's response sender (release r24.10, and still upstream)
    drops the outputs a request did not ask for after releasing the GIL, which frees their
    numpy arrays without it. Stubs then died at random (segfaults in libpython, a corrupted
    heap) once callers asked for fewer outputs than a model sends."""
    wanted = set(request.requested_output_names())
    return [tensor for tensor in outputs if tensor.name() in wanted]


def response(request: Any, outputs: Sequence[Any]) -> Any:
    """A response with the outputs the request asked for (see ``requested``)."""
    return pb_utils.InferenceResponse(output_tensors=requested(request, outputs))


def error_response(error: Exception, code: int | None = None) -> Any:
    """An error response; a refused input (INVALID_ARG, the default) says "invalid input"
    first, which a BLS caller can read where Triton loses the error's code."""
    if code is None:
        code = pb_utils.TritonError.INVALID_ARG
        message = f"{INVALID_INPUT}: {error}"
    else:
        message = str(error)
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))


def send_final(request: Any, sender: Any, response: Any) -> None:
    """End a decoupled request with its last response. A request whose client has cancelled
    gets the final flag alone: on Triton 2.51 a response with outputs or an error sent to
    it blocks the sender for about 0.5 s, and with it the stub's event loop."""
    final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
    if request.is_cancelled():
        sender.send(flags=final)
    else:
        sender.send(response, flags=final)


class SendLanes:
    """Sends decoupled responses off the event loop. Each send is a blocking round trip to
    the server (waiting without the GIL): made on the loop, a request's progress events held
    up every other request's sub-requests. A request's responses all go through one lane, a
    single thread, so its events keep their order and its final response comes last."""

    def __init__(self, lanes: int):
        self._lanes = [
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"send{index}")
            for index in range(lanes)
        ]
        self._turn = itertools.count()

    def sender(self, request: Any) -> LaneSender:
        lane = self._lanes[next(self._turn) % len(self._lanes)]
        return LaneSender(request, request.get_response_sender(), lane)

    def close(self) -> None:
        for lane in self._lanes:
            lane.shutdown(wait=True)


class LaneSender:
    """One request's response sender, on its lane (``SendLanes``)."""

    def __init__(self, request: Any, sender: Any, lane: ThreadPoolExecutor):
        self.request = request
        self._sender = sender
        self._lane = lane

    def send(self, response: Any) -> None:
        """A response before the final one; returns at once."""
        self._lane.submit(self._send, response)

    def _send(self, response: Any) -> None:
        try:
            self._sender.send(response)
        except Exception as error:  # the client has gone: the final send finds out
            pb_utils.Logger.log_warn(f"a progress event could not be sent: {error}")

    async def send_final(self, response: Any) -> None:
        """The last response, after every event sent before it."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._lane, send_final, self.request, self._sender, response)


def execute_batched(
    requests: Sequence[Any],
    parse: Callable[[dict[str, np.ndarray], str], tuple[list, Any]],
    run: Callable[[list], list],
    respond: Callable[[list, list, Any], Any],
    model_name: str,
) -> list:
    """The batched-model ``execute``: every request is parsed on its own (a bad one gets
    its INVALID_ARG error alone), the rows of all good ones go through ONE engine call, and
    each request gets its slice back. A row that breaks the engine call fails its own
    request only (``run_isolated``). ``parse(arrays, request parameters) -> (rows,
    options)``, ``run(rows) -> results``, ``respond(rows, results, options) -> response``."""
    responses: list = [None] * len(requests)
    parsed: dict[int, tuple[list, Any]] = {}
    for index, request in enumerate(requests):
        try:
            parsed[index] = parse(input_arrays(request), request.parameters())
        except InvalidParameter as error:
            responses[index] = error_response(error)
    outcomes = run_isolated([rows for rows, _ in parsed.values()], run) if parsed else []
    for (index, (rows, options)), outcome in zip(parsed.items(), outcomes):
        if isinstance(outcome, Exception):
            reference = log_reference()
            pb_utils.Logger.log_error(f"{model_name}: request failed [{reference}]: {outcome!r}")
            message = f"{model_name} could not serve this request: {outcome} [log {reference}]"
            responses[index] = error_response(RuntimeError(message), pb_utils.TritonError.INTERNAL)
        else:
            responses[index] = respond(rows, outcome, options)
    return responses
