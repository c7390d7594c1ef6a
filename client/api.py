"""A small Python API over the ``scaffolding`` models (what the CLI is built on).

gRPC talks to the decoupled ``scaffolding`` model over a stream and hands each
progress event to a callback; HTTP talks to its request/response twin
``scaffolding_unary`` with a plain ``infer``.
"""

from __future__ import annotations

import http.client
import json
import queue
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

STREAMING_MODEL = "scaffolding"
UNARY_MODEL = "scaffolding_unary"
DEFAULT_URLS = {"grpc": "localhost:8001", "http": "localhost:8000"}


class ScaffoldingError(RuntimeError):
    """The server refused or failed the request; the message is the server's."""


@dataclass
class Result:
    text: str
    answer: str | None
    account: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list)


def request_inputs(
    module,
    question: str,
    method: str,
    params: dict,
    seed: int,
    deadline_s: float | None,
    stream: bool | None,
):
    """The inputs of one scaffolding request, for ``module`` (tritonclient.grpc or .http)."""
    tensors = [
        ("text_input", np.array([question], dtype=np.object_), "BYTES"),
        ("method", np.array([method], dtype=np.object_), "BYTES"),
        ("method_parameters", np.array([json.dumps(params)], dtype=np.object_), "BYTES"),
        ("seed", np.array([seed], dtype=np.uint64), "UINT64"),
    ]
    if deadline_s is not None:
        tensors.append(("deadline_s", np.array([deadline_s], dtype=np.float32), "FP32"))
    if stream is not None:
        tensors.append(("stream", np.array([stream], dtype=np.bool_), "BOOL"))
    inputs = []
    for name, value, dtype in tensors:
        tensor = module.InferInput(name, list(value.shape), dtype)
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    return inputs


def result_of(response, events: list[dict]) -> Result:
    """A scaffolding model's final response (tritonclient's result) as a ``Result``."""

    def text(name: str) -> str:
        value = response.as_numpy(name)
        return value.reshape(-1)[0].decode("utf-8") if value is not None else ""

    answer = text("answer")
    return Result(
        text=text("text_output"),
        answer=answer or None,
        account=json.loads(text("account") or "{}"),
        events=events,
    )


class ScaffoldingClient:
    def __init__(
        self,
        url: str | None = None,
        protocol: str = "grpc",
        *,
        streaming_model: str = STREAMING_MODEL,
        unary_model: str = UNARY_MODEL,
    ):
        if protocol not in DEFAULT_URLS:
            raise ValueError(f"protocol must be 'grpc' or 'http', got {protocol!r}")
        self.protocol = protocol
        self.url = url or DEFAULT_URLS[protocol]
        self.streaming_model = streaming_model
        self.unary_model = unary_model
        if protocol == "grpc":
            import tritonclient.grpc as module
        else:
            import tritonclient.http as module
        self._module = module
        self._client = module.InferenceServerClient(self.url)

    def close(self) -> None:
        self._client.close()

    def is_ready(self) -> bool:
        """Whether a Triton server answers at the URL and is ready (False, not an error,
        when nothing answers there or the server is shutting down)."""
        try:
            return bool(self._client.is_server_ready())
        except Exception:  # tritonclient raises its own kinds for a refused connection
            return False

    def __enter__(self) -> ScaffoldingClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def ask(
        self,
        question: str,
        method: str = "majority_vote",
        params: dict[str, Any] | None = None,
        *,
        seed: int = 0,
        deadline_s: float | None = None,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        timeout_s: float = 3600.0,
    ) -> Result:
        """Run ``method`` on ``question``. Over gRPC, ``on_event`` sees each progress event
        as it happens."""
        params = params or {}
        from tritonclient.utils import InferenceServerException

        try:
            if self.protocol == "http":
                response = self._client.infer(
                    self.unary_model,
                    request_inputs(self._module, question, method, params, seed, deadline_s, None),
                    timeout=int(timeout_s),
                )
                return result_of(response, [])
            return self._ask_streaming(
                question, method, params, seed, deadline_s, on_event, timeout_s
            )
        except InferenceServerException as error:
            raise ScaffoldingError(error.message() or str(error)) from None
        except (OSError, http.client.HTTPException) as error:  # the connection went away
            raise ScaffoldingError(f"lost the connection to the server: {error}") from None

    def _ask_streaming(
        self, question, method, params, seed, deadline_s, on_event, timeout_s
    ) -> Result:
        replies: queue.Queue = queue.Queue()
        self._client.start_stream(callback=lambda result, error: replies.put((result, error)))
        events: list[dict] = []
        finished = False
        try:
            self._client.async_stream_infer(
                self.streaming_model,
                request_inputs(
                    self._module, question, method, params, seed, deadline_s, on_event is not None
                ),
            )
            while True:
                try:
                    result, error = replies.get(timeout=timeout_s)
                except queue.Empty:
                    raise ScaffoldingError(f"no response within {timeout_s} s") from None
                if error is not None:
                    finished = True
                    raise ScaffoldingError(
                        error.message() if hasattr(error, "message") else str(error)
                    )
                event = result.as_numpy("event")
                if result.as_numpy("account") is None and event is not None:
                    payload = json.loads(event.reshape(-1)[0].decode("utf-8"))
                    events.append(payload)
                    if on_event is not None:
                        on_event(payload)
                    continue
                finished = True
                return result_of(result, events)
        finally:
            # leaving early (Ctrl-C, timeout): cancel the request, so the server stops
            # its sub-requests
            self._client.stop_stream(cancel_requests=not finished)
