"""The generation targets the integration tests run every method against: this project's
generator, the contract fixtures (tests/fixtures/engine_repository) and a real
OpenAI-compatible server (``transformers serve``) over the shipped generator.

``scaffolding_repository`` writes one request/response scaffolding model per target
(``scaffolding_via_<target>``), plus a decoupled one for the cancellation tests."""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import tritonclient.grpc as grpc

from scaffolding_backend.server import REPO_ROOT, free_port

FIXTURES = REPO_ROOT / "tests" / "fixtures"
ENGINE_REPOSITORY = FIXTURES / "engine_repository"
SHIPPED_GENERATOR = REPO_ROOT / "models" / "generator"

# target -> the scaffolding config parameters that point at it
TARGETS: dict[str, dict[str, str]] = {
    "native": {"generator_model": "generator", "generator_contract": "native"},
    # a step's generations as the rows of one request
    "native_folded": {
        "generator_model": "generator",
        "generator_contract": "native",
        "fold_generations": "8",
    },
    "trtllm_v0.14": {
        "generator_model": "trtllm_v014_ensemble",
        "generator_contract": "trtllm",
        "generator_release": "v0.14",
    },
    "trtllm_current": {
        "generator_model": "trtllm_current_ensemble",
        "generator_contract": "trtllm",
    },
    "trtllm_current_decoupled": {
        "generator_model": "trtllm_current_ensemble_decoupled",
        "generator_contract": "trtllm",
        "generator_decoupled": "true",  # one response per request; the BLS target streams
    },
    "trtllm_bls": {
        "generator_model": "trtllm_current_bls",
        "generator_contract": "trtllm_bls",
        "generator_decoupled": "true",
    },
    "trtllm_llmapi": {
        "generator_model": "trtllm_llmapi",
        "generator_contract": "trtllm_llmapi",
        "generator_decoupled": "true",
        "generator_stream": "true",
    },
    "vllm": {
        "generator_model": "vllm_model",
        "generator_contract": "vllm",
        "generator_stream": "true",
    },
    "openai": {"generator_contract": "openai"},  # URL and model filled in once the server is up
}
CANCELLABLE = "trtllm_llmapi"  # its fixture streams slowly and honours stop requests
# a prompt format of its own for scaffolding_custom_format (over the native generator)
CUSTOM_FORMAT = {"prompt_template": "Problem: {question}\nSolution:\n", "step_delimiter": "\n"}


def stream_responses(
    grpc_url: str,
    model: str,
    inputs: list,
    *,
    timeout_s: float = 60,
    outputs: list[str] | None = None,
) -> list:
    """Every response with outputs to one request over a gRPC stream (how a decoupled model
    such as the generator answers), the final one last; ``outputs``: ask for only these."""
    replies: queue.Queue = queue.Queue()
    requested = [grpc.InferRequestedOutput(name) for name in outputs] if outputs else None
    with grpc.InferenceServerClient(grpc_url) as client:
        client.start_stream(callback=lambda result, error: replies.put((result, error)))
        client.async_stream_infer(
            model, inputs, outputs=requested, enable_empty_final_response=True
        )
        responses = []
        while True:
            result, error = replies.get(timeout=timeout_s)
            if error is not None:
                client.stop_stream()
                raise error
            final = result.get_response().parameters["triton_final_response"].bool_param
            if result.get_response().outputs:
                responses.append(result)
            if final:
                client.stop_stream()
                return responses


def final_responses(
    grpc_url: str, model: str, requests: list[list], *, timeout_s: float = 120
) -> list:
    """Several requests in flight together over one gRPC stream; each one's final response
    (with outputs), in the order the requests were given."""
    replies: queue.Queue = queue.Queue()
    finals: dict[str, object] = {}
    with grpc.InferenceServerClient(grpc_url) as client:
        client.start_stream(callback=lambda result, error: replies.put((result, error)))
        for index, inputs in enumerate(requests):
            client.async_stream_infer(model, inputs, request_id=str(index))
        while len(finals) < len(requests):
            result, error = replies.get(timeout=timeout_s)
            if error is not None:
                client.stop_stream()
                raise error
            if result.get_response().parameters["triton_final_response"].bool_param:
                finals[result.get_response().id] = result
        client.stop_stream()
    return [finals[str(index)] for index in range(len(requests))]


def model_name(target: str, *, streaming: bool = False) -> str:
    return f"scaffolding_{'stream' if streaming else 'via'}_{target.replace('.', '')}"


def _config(name: str, parameters: dict[str, str], *, decoupled: bool) -> str:
    source = (REPO_ROOT / "model_repository" / "scaffolding" / "config.pbtxt").read_text()
    body = source[source.index('backend: "python"') :]
    if not decoupled:
        body = body.replace("decoupled: true", "decoupled: false")
    entries = ",\n".join(
        f"  {{ key: {json.dumps(key)} value: {{ string_value: {json.dumps(value)} }} }}"
        for key, value in parameters.items()
    )
    return f'name: "{name}"\n{body}\nparameters [\n{entries}\n]\n'


def scaffolding_repository(root: Path, openai: OpenAIServer | None) -> Path:
    """A model repository of scaffolding models, one per target."""
    model_py = (REPO_ROOT / "model_repository" / "scaffolding" / "1" / "model.py").read_text()
    common = {"tokenizer_dir": str(SHIPPED_GENERATOR)}
    models = {}
    for target, parameters in TARGETS.items():
        if target == "openai":
            if openai is None:
                continue
            parameters = {
                **parameters,
                "generator_url": openai.base_url,
                "generator_model": openai.model,
            }
            # transformers serve applies a seed to one shared generator when a request arrives,
            # so seeds hold only for requests it serves one at a time
            parameters["generator_max_connections"] = "1"
        models[model_name(target)] = ({**common, **parameters}, False)
    models[model_name(CANCELLABLE, streaming=True)] = ({**common, **TARGETS[CANCELLABLE]}, True)
    if openai is not None:
        # the chat API: the server's chat template turns the question into the model's prompt
        chat = {
            **models[model_name("openai")][0],
            "generator_api": "chat",
            "prompt_template": "{question}",
        }
        models["scaffolding_openai_chat"] = (chat, False)
    models["scaffolding_custom_format"] = ({**TARGETS["native"], **CUSTOM_FORMAT}, False)
    # admission control: one request at a time in its one instance
    models["scaffolding_one_at_a_time"] = (
        {**TARGETS["native"], "max_concurrent_requests": "1"},
        True,
    )
    # a reward model that fails every request may be chosen (fault tests)
    models["scaffolding_faulty_reward"] = (
        {**TARGETS["native"], "reward_models": "reward,reward_failing"},
        False,
    )
    # a cap on sub-requests in flight: the rest of a wide request waits in the scaffolding model
    models["scaffolding_eight_in_flight"] = (
        {**TARGETS["native"], "max_inflight_subrequests": "8"},
        True,
    )
    for name, (parameters, decoupled) in models.items():
        (root / name / "1").mkdir(parents=True, exist_ok=True)
        (root / name / "config.pbtxt").write_text(_config(name, parameters, decoupled=decoupled))
        (root / name / "1" / "model.py").write_text(model_py)
    return root


class OpenAIServer:
    """``transformers serve`` (a real OpenAI-compatible server) over a copy of the shipped
    generator, prepared so that the server samples when asked to (its generation config
    says do_sample) and reads a chat message as the question."""

    CHAT_TEMPLATE = (
        "{% for message in messages %}{% if message['role'] == 'user' %}"
        "Question: {{ message['content'] }}\nAnswer:\n{% endif %}{% endfor %}"
    )

    def __init__(self, work_dir: Path):
        self.model_dir = work_dir / "openai-model"
        self.log = work_dir / "transformers-serve.log"
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def model(self) -> str:
        return str(self.model_dir)  # transformers serve answers only to the path it was given

    def _prepare(self) -> None:
        shutil.copytree(SHIPPED_GENERATOR, self.model_dir, dirs_exist_ok=True)
        tokenizer_config = self.model_dir / "tokenizer_config.json"
        config = json.loads(tokenizer_config.read_text())
        config["chat_template"] = self.CHAT_TEMPLATE
        tokenizer_config.write_text(json.dumps(config, indent=2))
        generation_config = self.model_dir / "generation_config.json"
        config = json.loads(generation_config.read_text())
        # the server switches sampling off for temperature 0 but never on; top_k 0 is the
        # OpenAI API's plain temperature sampling
        config.update({"do_sample": True, "top_k": 0, "temperature": 1.0, "top_p": 1.0})
        generation_config.write_text(json.dumps(config, indent=2))

    def start(self, timeout_s: float = 180.0) -> OpenAIServer:
        self._prepare()
        command = [
            str(Path(sys.executable).parent / "transformers"),
            "serve",
            str(self.model_dir),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--device",
            "cpu",
        ]
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "OMP_NUM_THREADS": "1",
        }
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"transformers serve exited during start-up; see {self.log}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2):
                    return self
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(
            f"transformers serve was not ready within {timeout_s:.0f} s; see {self.log}"
        )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
