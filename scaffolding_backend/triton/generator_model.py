"""The ``generator`` model: a CPU Hugging Face causal LM with in-flight batching, behind
this project's native generation contract (``docs/ARCHITECTURE.md``): TensorRT-LLM's
input names, plus ``finish_reason`` and the token counts TensorRT-LLM lacks.

Decoupled, like a TensorRT-LLM model deployed with ``decoupled_mode``: every request goes
into the engine's running batch at once and gets its responses as the engine writes them.
With ``stream`` true, one response per new token (its text and log-probability), then a
final one with the finish reason and the counts; otherwise one final response with
everything. A request that is cancelled (the client left) or stopped (a request with
``stop`` true and the same request id, as TensorRT-LLM's ``tensorrt_llm`` model takes it)
leaves the batch at the next decode step; its final response says ``cancelled``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from ..engines.echo import EchoEngine
from ..engines.generation import (
    Engine,
    GenerationRequest,
    GenerationResult,
    StopsByRequestId,
)
from ..kernel.params import InvalidParameter
from ..service.config import (
    ConfigError,
    GeneratorConfig,
    ProgramGeneratorConfig,
    resolve_model_dir,
)
from ..service.values import Arrays, all_values, row_values
from . import io
from .metrics import Throttled, release

# a client that leaves is noticed within this; every check is a round trip to the server, and
# polling 64 requests at 20 Hz each slowed the stub's intake of new requests and stops
CANCEL_POLL_S = 0.2
ENGINE_METRICS_S = 0.05  # at most 20 writes of the five counters a second, not one per request


@dataclass(frozen=True)
class Options:
    stream: bool
    return_log_probs: bool
    exclude_input: bool


def _column(values: list, dtype: Any) -> np.ndarray:
    return np.array([[value] for value in values], dtype=dtype)


class GeneratorModel:
    config_class: type[GeneratorConfig] = GeneratorConfig

    def initialize(self, args: dict[str, Any]) -> None:
        try:
            self.config = self.config_class.from_model_config(json.loads(args["model_config"]))
            self.engine, serving = self._engine(args["model_repository"])
        except ConfigError as error:
            raise pb_utils.TritonModelException(f"{args['model_name']}: {error}") from None
        self.stops = StopsByRequestId()
        self.metrics = EngineMetrics(args["model_name"], self.engine)
        # the engine's counters lag by at most this: a cancel test reads them at the cancel
        self.write_metrics = Throttled(self.metrics.update, interval_s=ENGINE_METRICS_S)
        pb_utils.Logger.log_info(f"{args['model_name']}: serving {serving} ({self.config})")

    def _engine(self, model_repository: str) -> tuple[Engine, str]:
        """The configured engine, and what it serves (for the log)."""
        if self.config.engine == "echo":
            echo = EchoEngine(self.config.echo_completion, self.config.echo_delay_s)
            return echo, f"a fixed completion after {self.config.echo_delay_s} s (echo engine)"
        # torch only where a model generates
        from ..engines.causal_lm import CausalLMEngine

        model_dir = resolve_model_dir(self.config.model_dir, model_repository)
        engine = CausalLMEngine(
            model_dir,
            num_threads=self.config.num_threads or None,
            max_batch_rows=self.config.max_batch_rows,
        )
        return engine, model_dir

    def finalize(self) -> None:
        self.engine.close()
        self.write_metrics.cancel()
        self.metrics.close()

    # -- parsing ------------------------------------------------------------------------------

    @staticmethod
    def _per_row(
        arrays: Arrays,
        name: str,
        kind: type,
        default: Any,
        rows: int,
        valid: Callable[[Any], bool] = lambda _: True,
        rule: str = "",
    ) -> list[Any]:
        """An input's value for each prompt of the request, each given one ``valid`` (else
        refused with ``rule``). With max_batch_size, a client's batch of B prompts sends every
        input as [B, 1] (TensorRT-LLM's per-row sampling inputs); one element holds for
        every prompt."""
        values = all_values(arrays, name)
        if values is None:
            return [default] * rows
        if len(values) == 1:
            values = values * rows
        elif len(values) != rows:
            raise InvalidParameter(
                name, f"expected one element or one per prompt ({rows}), got {len(values)}"
            )
        converted = [kind(value) for value in values]
        for value in converted:
            if not valid(value):
                raise InvalidParameter(name, f"{rule}, got {value}")
        return converted

    def _same_for_all(self, arrays: Arrays, name: str, default: bool, rows: int) -> bool:
        """A flag of the whole request (it decides how the request is answered): every row
        of a batch must say the same."""
        values = set(self._per_row(arrays, name, bool, default, rows))
        if len(values) > 1:
            raise InvalidParameter(name, "must be the same for every prompt of a request")
        return values.pop()

    @staticmethod
    def _stop_words_per_row(arrays: Arrays, rows: int) -> list[list[str]]:
        given = row_values(arrays, "stop_words")
        if given is None:
            return [[] for _ in range(rows)]
        if len(given) not in (1, rows):
            raise InvalidParameter(
                "stop_words", f"expected one list or one per prompt ({rows}), got {len(given)}"
            )
        lists = [[word for word in words if word] for words in given]
        return lists * rows if len(lists) == 1 else lists

    def _parse(self, arrays: Arrays) -> tuple[list[GenerationRequest], Options]:
        prompts = all_values(arrays, "text_input")
        if not prompts:
            raise InvalidParameter("text_input", "is required")
        if any(not p for p in prompts):
            raise InvalidParameter("text_input", "must not be empty")
        rows = len(prompts)
        if arrays.get("max_tokens") is None:
            raise InvalidParameter("max_tokens", "is required")
        cap = self.config.max_tokens_cap
        max_tokens = self._per_row(
            arrays, "max_tokens", int, None, rows, lambda v: 1 <= v <= cap,
            f"must be between 1 and {cap}",
        )  # fmt: skip
        temperatures = self._per_row(
            arrays, "temperature", float, 1.0, rows, lambda v: v >= 0, "must be >= 0"
        )
        top_ps = self._per_row(
            arrays, "top_p", float, 1.0, rows, lambda v: 0 < v <= 1, "must be in (0, 1]"
        )
        top_ks = self._per_row(arrays, "top_k", int, 0, rows, lambda v: v >= 0, "must be >= 0")
        seed_name = "seed" if arrays.get("seed") is not None else "random_seed"
        seeds = self._per_row(arrays, seed_name, int, None, rows)
        stop_words = self._stop_words_per_row(arrays, rows)
        for prompt, tokens in zip(prompts, max_tokens):
            length = self.engine.count_tokens(prompt)
            if self.engine.max_context and length + tokens > self.engine.max_context:
                raise InvalidParameter(
                    "text_input",
                    f"prompt of {length} tokens plus max_tokens={tokens} exceeds "
                    f"the model's context of {self.engine.max_context}",
                )
        options = Options(
            stream=self._same_for_all(arrays, "stream", False, rows),
            return_log_probs=self._same_for_all(arrays, "return_log_probs", False, rows),
            exclude_input=self._same_for_all(arrays, "exclude_input_in_output", False, rows),
        )
        if options.stream and rows > 1:
            raise InvalidParameter(
                "stream", "streams one prompt per request, got a batch of several"
            )
        requests = [
            GenerationRequest(*values)
            for values in zip(prompts, max_tokens, temperatures, top_ps, top_ks, seeds, stop_words)
        ]
        return requests, options

    # -- serving ------------------------------------------------------------------------------

    async def execute(self, requests: list[Any]) -> None:
        await asyncio.gather(*(self._serve(request) for request in requests))

    async def _serve(self, request: Any) -> None:
        sender = request.get_response_sender()
        final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        arrays = io.input_arrays(request)
        try:
            # a stop request's rows, counted without decoding its prompts
            prompts = max(1, np.size(arrays.get("text_input", ())))
            if self._same_for_all(arrays, "stop", False, prompts):
                self.stops.stop(request.request_id())  # a stop request: end the running one
                sender.send(pb_utils.InferenceResponse(output_tensors=[]), flags=final)
                return
            rows, options = self._parse(arrays)
        except InvalidParameter as error:
            sender.send(io.error_response(error), flags=final)
            return
        loop = asyncio.get_running_loop()
        tokens: asyncio.Queue = asyncio.Queue()
        results_due = [loop.create_future() for _ in rows]

        # the engine calls these on its own thread; its calls arrive here in order
        def on_token(text: str, log_prob: float) -> None:
            loop.call_soon_threadsafe(tokens.put_nowait, (text, log_prob))

        def on_finish(due: asyncio.Future) -> Any:
            return lambda result: loop.call_soon_threadsafe(due.set_result, result)

        generations = [
            self.engine.submit(row, on_token if options.stream else None, on_finish(due))
            for row, due in zip(rows, results_due)
        ]
        request_id = request.request_id()
        if request_id:
            self.stops.started(request_id, generations)
        finished = asyncio.gather(*results_due)
        checked = loop.time()
        try:
            while not (finished.done() and tokens.empty()):
                # is_cancelled asks the server (a round trip): at most every CANCEL_POLL_S
                if loop.time() - checked >= CANCEL_POLL_S:
                    checked = loop.time()
                    if request.is_cancelled():
                        for generation in generations:
                            generation.cancel()
                if not options.stream:
                    await asyncio.wait([finished], timeout=CANCEL_POLL_S)
                    continue
                try:
                    text, log_prob = await asyncio.wait_for(tokens.get(), CANCEL_POLL_S)
                except asyncio.TimeoutError:
                    continue
                sender.send(io.response(request, self._token_outputs(text, log_prob, options)))
            results = finished.result()
        finally:
            if request_id:
                self.stops.finished(request_id, generations)
        self.write_metrics()
        failed = [result.error for result in results if result.finish_reason == "error"]
        if failed:
            failure = RuntimeError(f"generation failed: {failed[0]}")
            io.send_final(
                request, sender, io.error_response(failure, pb_utils.TritonError.INTERNAL)
            )
            return
        final_outputs = self._final_outputs(rows, results, options)
        io.send_final(request, sender, io.response(request, final_outputs))

    @staticmethod
    def _token_outputs(text: str, log_prob: float, options: Options) -> list[Any]:
        outputs = [pb_utils.Tensor("text_output", np.array([[text]], dtype=np.object_))]
        if options.return_log_probs:
            outputs.append(
                pb_utils.Tensor("output_log_probs", np.array([[[log_prob]]], dtype=np.float32))
            )
        return outputs

    @staticmethod
    def _final_outputs(
        rows: list[GenerationRequest], results: list[GenerationResult], options: Options
    ) -> list[Any]:
        if options.stream:  # the text went out token by token
            texts = ["" for _ in results]
        else:
            texts = [
                r.text if options.exclude_input else row.prompt + r.text
                for r, row in zip(results, rows)
            ]
        outputs = [
            pb_utils.Tensor("text_output", _column(texts, np.object_)),
            pb_utils.Tensor(
                "cum_log_probs", _column([r.cum_log_prob for r in results], np.float32)
            ),
            pb_utils.Tensor(
                "num_input_tokens", _column([r.num_prompt_tokens for r in results], np.int32)
            ),
            pb_utils.Tensor(
                "num_output_tokens", _column([r.num_output_tokens for r in results], np.int32)
            ),
            pb_utils.Tensor(
                "finish_reason", _column([r.finish_reason for r in results], np.object_)
            ),
        ]
        if options.return_log_probs and not options.stream:
            longest = max(1, max(r.num_output_tokens for r in results))
            log_probs = np.zeros((len(results), 1, longest), dtype=np.float32)
            for row, result in enumerate(results):
                log_probs[row, 0, : result.num_output_tokens] = result.token_log_probs
            outputs.append(pb_utils.Tensor("output_log_probs", log_probs))
        return outputs


class ProgramGeneratorModel(GeneratorModel):
    """The same model serving the program generator, with settings of its own."""

    config_class = ProgramGeneratorConfig


class EngineMetrics:
    """The engine's counters on Triton's /metrics: generations that left the engine (of them,
    those that left cancelled), generated tokens, and tokens written after a cancel (which
    stays 0: a cancelled request leaves at the next decode step)."""

    def __init__(self, model_name: str, engine: Engine):
        self.engine = engine
        counter = pb_utils.MetricFamily.COUNTER
        labels = {"model": model_name}
        # the families must outlive their metrics: both are kept
        self.families = {
            name: pb_utils.MetricFamily(
                name=f"generator_{name}_total", description=description, kind=counter
            )
            for name, description in (
                ("generations", "Generations that left the engine (finished, cancelled or failed)"),
                ("tokens", "Tokens the engine wrote"),
                ("steps", "Batched decode steps the engine ran"),
                ("cancelled", "Requests that left the batch cancelled"),
                ("tokens_after_cancel", "Tokens written for a request after it was cancelled"),
            )
        }
        self.metrics = {
            name: family.Metric(labels=labels) for name, family in self.families.items()
        }
        self.reported = {name: 0 for name in self.families}

    def close(self) -> None:
        """Release the metrics, then their families (see ``metrics.release``)."""
        release(self.metrics, self.families)

    def update(self) -> None:
        """Write the counters that moved (each write is a blocking round trip)."""
        for name, metric in self.metrics.items():
            value = getattr(self.engine.stats, name)
            if value != self.reported[name]:
                metric.increment(value - self.reported[name])
                self.reported[name] = value
