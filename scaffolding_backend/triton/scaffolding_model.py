"""The ``scaffolding`` model: hosts one controller per request and fans its tasks
out to co-hosted models over BLS.

The same class serves two entries: ``scaffolding`` (decoupled: one instance runs
many requests concurrently and streams progress events over gRPC) and
``scaffolding_unary`` (plain request/response, for HTTP ``/infer``).
"""

from __future__ import annotations

import asyncio
import json
import os
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

CANCEL_POLL_S = 0.05
OVERRIDES_ENV = "SCAFFOLDING_CONFIG_OVERRIDES"


def config_overrides() -> dict[str, str]:
    """Config parameters overridden from the environment (a JSON object), so a deployment
    (docker-compose, a TensorRT-LLM stack) can retarget the models without editing config.pbtxt."""
    raw = os.environ.get(OVERRIDES_ENV, "")
    if not raw:
        return {}
    try:
        overrides = json.loads(raw)
    except json.JSONDecodeError as error:
        raise pb_utils.TritonModelException(f"{OVERRIDES_ENV} is not a JSON object: {error}") from None
    if not isinstance(overrides, dict):
        raise pb_utils.TritonModelException(f"{OVERRIDES_ENV} must be a JSON object of config parameters")
    return {str(key): str(value) for key, value in overrides.items()}


class ScaffoldingModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        parameters = inputs.model_parameters(config)
        parameters.update(config_overrides())
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
        self.default_reward_model = parameters.get("reward_model", "reward")
        # reward models a request may pick with the parameter "reward_model" (e.g. the ORM)
        self.reward_models = {name for name in parameters.get("reward_models", self.default_reward_model).split(",") if name}
        self.reward_models.add(self.default_reward_model)
        self.metrics = ScaffoldingMetrics(args["model_name"])
        pb_utils.Logger.log_info(
            f"{args['model_name']}: decoupled={self.decoupled} generator={self.generation_model.name} "
            f"reward={self.default_reward_model} (allowed: {sorted(self.reward_models)}) caps={self.caps} max_tasks={self.max_tasks}"
        )

    # -- request parsing -------------------------------------------------------------

    def _parse(self, request) -> dict:
        question = inputs.one_string(request, "text_input")
        if not question or not question.strip():
            raise InvalidInput("text_input", "a non-empty question is required")
        # request parameters and the JSON tensor "parameters" say the same things; tensors win
        options = inputs.request_parameters(request)
        params_json = inputs.one_string(request, "parameters")
        if params_json:
            try:
                from_tensor = json.loads(params_json)
            except json.JSONDecodeError as error:
                raise InvalidInput("parameters", f"not valid JSON: {error}") from None
            if not isinstance(from_tensor, dict):
                raise InvalidInput("parameters", "must be a JSON object of method parameters")
            options.update(from_tensor)
        method = inputs.one_string(request, "method") or options.pop("method", None) or self.default_method
        options.pop("method", None)
        seed = inputs.one_scalar(request, "seed", int, None)
        seed = seed if seed is not None else self._option(options, "seed", int, 0)
        if seed < 0:
            raise InvalidInput("seed", f"must be >= 0, got {seed}")
        deadline = inputs.one_scalar(request, "deadline_s", float, None)
        deadline = deadline if deadline is not None else self._option(options, "deadline_s", float, self.default_deadline_s)
        if not 0 < deadline <= self.max_deadline_s:
            raise InvalidInput("deadline_s", f"must be in (0, {self.max_deadline_s}] seconds, got {deadline}")
        stream = inputs.one_scalar(request, "stream", bool, None)
        stream = stream if stream is not None else self._option(options, "stream", bool, False)
        if stream and not self.decoupled:
            raise InvalidInput("stream", "progress streaming needs the decoupled 'scaffolding' model over gRPC streaming")
        reward_model = self._option(options, "reward_model", str, self.default_reward_model)
        if reward_model not in self.reward_models:
            raise InvalidInput("reward_model", f"must be one of {sorted(self.reward_models)}, got {reward_model!r}")
        controller = build_controller(method, options, self.prompt_format, self.caps)
        return {
            "question": question, "method": method, "controller": controller, "seed": seed,
            "deadline": deadline, "stream": stream, "reward_model": reward_model,
        }

    @staticmethod
    def _option(options: dict, name: str, kind: type, default):
        """Take a request-level option out of the method parameters, checking its type."""
        if name not in options:
            return default
        value = options.pop(name)
        numeric = kind in (int, float) and isinstance(value, (int, float)) and not isinstance(value, bool)
        if isinstance(value, kind) or (numeric and (kind is float or float(value).is_integer())):
            return kind(value)
        raise InvalidInput(name, f"expected {kind.__name__}, got {value!r}")

    # -- serving ---------------------------------------------------------------------

    async def execute(self, requests):
        ensure_bls_executor(self.bls_threads)
        if self.decoupled:
            await asyncio.gather(*(self._serve_streaming(request) for request in requests))
            return None
        return await asyncio.gather(*(self._serve_safely(request, None) for request in requests))

    async def _serve_streaming(self, request) -> None:
        sender = request.get_response_sender()
        response = await self._serve_safely(request, sender)
        sender.send(response, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    async def _serve_safely(self, request, sender):
        """Always a response: a bug in a controller fails its request, never the batch or the stub."""
        try:
            return await self._serve(request, sender)
        except Exception as error:
            pb_utils.Logger.log_error(f"scaffolding: request failed: {error!r}")
            return inputs.error_response(RuntimeError(f"internal error: {type(error).__name__}: {error}"), pb_utils.TritonError.INTERNAL)

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
            REWARD: BLSRewardWorker(RewardModel(job["reward_model"], self.prompt_format.step_delimiter), context),
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
