"""The ``scaffolding`` model: hosts one controller per request and fans its tasks
out to co-hosted models over BLS.

The same class serves two entries: ``scaffolding`` (decoupled: one instance runs
many requests concurrently and streams progress events over gRPC) and
``scaffolding_unary`` (plain request/response, for HTTP ``/infer``).
"""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import triton_python_backend_utils as pb_utils

from ..controllers import build_controller
from ..core.controller import Progress
from ..core.params import Caps, InvalidParameter
from ..core.prompts import DEFAULT_STEP_DELIMITER, DEFAULT_TEMPLATE, PromptFormat
from ..core.runtime import Account, Limits, RequestFailed, Runtime
from ..core.tasks import GENERATION, REWARD
from ..workers.triton_bls import BLSContext, BLSGenerationWorker, BLSRewardWorker, GenerationModel, RewardModel, ensure_bls_executor
from . import inputs
from .inputs import InvalidInput
from .metrics import ScaffoldingMetrics

# request-level keys; every other request parameter is a method parameter
RESERVED_PARAMETERS = {"method", "seed", "deadline_s", "stream"}
CANCEL_POLL_S = 0.05


class ScaffoldingModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        parameters = inputs.model_parameters(config)
        self.decoupled = pb_utils.using_decoupled_model_transaction_policy(config)
        self.default_method = parameters.get("default_method", "majority_vote")
        self.caps = Caps(
            max_samples=int(parameters.get("max_samples", 64)),
            max_tokens=int(parameters.get("max_tokens", 1024)),
            max_steps=int(parameters.get("max_steps", 32)),
        )
        self.max_tasks = int(parameters.get("max_tasks", 1024))
        self.default_deadline_s = float(parameters.get("default_deadline_s", 300))
        self.max_deadline_s = float(parameters.get("max_deadline_s", 1800))
        self.bls_threads = int(parameters.get("bls_threads", 128))
        # config.pbtxt strings take C escapes, so "\n" there arrives here as a newline
        self.prompt_format = PromptFormat(
            template=parameters.get("prompt_template", DEFAULT_TEMPLATE),
            step_delimiter=parameters.get("step_delimiter", DEFAULT_STEP_DELIMITER),
        )
        self.generation_model = GenerationModel(
            name=parameters.get("generator_model", "generator"),
            seed_input=parameters.get("generator_seed_input", "seed"),
            extra_outputs=tuple(o for o in parameters.get("generator_extra_outputs", ",".join(GenerationModel.extra_outputs)).split(",") if o),
        )
        self.reward_model = RewardModel(name=parameters.get("reward_model", "reward"), step_delimiter=self.prompt_format.step_delimiter)
        self.metrics = ScaffoldingMetrics(args["model_name"])
        pb_utils.Logger.log_info(
            f"{args['model_name']}: decoupled={self.decoupled} generator={self.generation_model.name} "
            f"reward={self.reward_model.name} caps={self.caps} max_tasks={self.max_tasks}"
        )

    # -- request parsing -------------------------------------------------------------

    def _parse(self, request) -> dict:
        question = inputs.one_string(request, "text_input")
        if not question or not question.strip():
            raise InvalidInput("text_input", "a non-empty question is required")
        from_parameters = inputs.request_parameters(request)
        method = inputs.one_string(request, "method") or from_parameters.get("method") or self.default_method
        params_json = inputs.one_string(request, "parameters")
        method_params: dict = {k: v for k, v in from_parameters.items() if k not in RESERVED_PARAMETERS}
        if params_json:
            try:
                from_tensor = json.loads(params_json)
            except json.JSONDecodeError as error:
                raise InvalidInput("parameters", f"not valid JSON: {error}") from None
            if not isinstance(from_tensor, dict):
                raise InvalidInput("parameters", "must be a JSON object of method parameters")
            method_params.update(from_tensor)
        seed = inputs.one_scalar(request, "seed", int, None)
        if seed is None:
            seed = int(from_parameters.get("seed", 0))
        deadline = inputs.one_scalar(request, "deadline_s", float, None)
        if deadline is None:
            deadline = float(from_parameters.get("deadline_s", self.default_deadline_s))
        if not 0 < deadline <= self.max_deadline_s:
            raise InvalidInput("deadline_s", f"must be in (0, {self.max_deadline_s}] seconds, got {deadline}")
        stream = inputs.one_scalar(request, "stream", bool, None)
        if stream is None:
            stream = bool(from_parameters.get("stream", False))
        if stream and not self.decoupled:
            raise InvalidInput("stream", "progress streaming needs the decoupled 'scaffolding' model over gRPC streaming")
        controller = build_controller(method, method_params, self.prompt_format, self.caps)
        return {"question": question, "method": method, "controller": controller, "seed": seed, "deadline": deadline, "stream": stream}

    # -- serving ---------------------------------------------------------------------

    async def execute(self, requests):
        ensure_bls_executor(self.bls_threads)
        if self.decoupled:
            await asyncio.gather(*(self._serve_streaming(request) for request in requests))
            return None
        return await asyncio.gather(*(self._serve(request, None) for request in requests))

    async def _serve_streaming(self, request) -> None:
        sender = request.get_response_sender()
        final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        try:
            response = await self._serve(request, sender)
        except Exception as error:  # never leave a stream without its final response
            response = inputs.error_response(error, pb_utils.TritonError.INTERNAL)
        sender.send(response, flags=final)

    async def _serve(self, request, sender):
        started = time.perf_counter()
        try:
            job = self._parse(request)
        except InvalidParameter as error:
            self.metrics.request_done("invalid", "invalid_argument", None, time.perf_counter() - started)
            return inputs.error_response(error)

        def on_progress(event: Progress) -> None:
            if job["stream"] and sender is not None:
                payload = json.dumps({"kind": event.kind, **event.data})
                sender.send(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("event", np.array([payload], dtype=np.object_))]))

        context = BLSContext(trace=request.trace() if hasattr(request, "trace") else None, timeout_us=int(job["deadline"] * 1e6))
        runtime = Runtime({
            GENERATION: BLSGenerationWorker(self.generation_model, context),
            REWARD: BLSRewardWorker(self.reward_model, context),
        })
        run = asyncio.ensure_future(runtime.run(
            job["controller"].process(job["question"]),
            method=job["method"],
            seed=job["seed"],
            limits=Limits(deadline_s=job["deadline"], max_tasks=self.max_tasks),
            on_progress=on_progress,
        ))
        watcher = asyncio.ensure_future(self._cancel_when_client_leaves(request, run))
        try:
            account = await run
        except RequestFailed as failure:
            self.metrics.request_done(job["method"], failure.reason, failure.account, time.perf_counter() - started)
            return inputs.error_response(RuntimeError(self._failure_message(failure)), self._error_code(failure.reason))
        finally:
            watcher.cancel()
        self.metrics.request_done(job["method"], "ok", account, time.perf_counter() - started)
        return self._final_response(account)

    @staticmethod
    async def _cancel_when_client_leaves(request, run: asyncio.Future) -> None:
        if not hasattr(request, "is_cancelled"):
            return
        while not run.done():
            if request.is_cancelled():
                run.cancel()
                return
            await asyncio.sleep(CANCEL_POLL_S)

    @staticmethod
    def _error_code(reason: str) -> int:
        return {
            "budget": pb_utils.TritonError.INVALID_ARG,
            "cancelled": pb_utils.TritonError.CANCELLED,
            "deadline": pb_utils.TritonError.UNAVAILABLE,
        }.get(reason, pb_utils.TritonError.INTERNAL)

    @staticmethod
    def _failure_message(failure: RequestFailed) -> str:
        account = failure.account.to_json()
        spent = {key: account[key] for key in ("tasks", "sub_requests", "output_tokens", "wall_seconds")}
        return f"{failure.reason}: {failure} (spent so far: {json.dumps(spent)})"

    @staticmethod
    def _final_response(account: Account):
        outcome = account.outcome
        answer = outcome.answer.text if outcome.answer else ""
        outputs = [
            pb_utils.Tensor("text_output", np.array([outcome.text], dtype=np.object_)),
            pb_utils.Tensor("answer", np.array([answer], dtype=np.object_)),
            pb_utils.Tensor("account", np.array([json.dumps(account.to_json())], dtype=np.object_)),
        ]
        return pb_utils.InferenceResponse(output_tensors=outputs)
