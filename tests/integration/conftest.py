"""One real tritonserver per test session on free ports, over the real model repository,
the contract fixtures and one scaffolding model per generation target; and the real
OpenAI-compatible server the openai target talks to."""

import os

import pytest
import tritonclient.http as http

from scaffolding_backend.server import DEFAULT_MODEL_REPOSITORY, REPO_ROOT, TritonServer
from scaffolding_training.tiny_model import build_tiny_model

from .engines import ENGINE_REPOSITORY, OpenAIServer, scaffolding_repository

SHIPPED_GENERATOR = REPO_ROOT / "models" / "generator"


@pytest.fixture(scope="session")
def openai_server(tmp_path_factory):
    server = OpenAIServer(tmp_path_factory.mktemp("openai")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def triton(tmp_path_factory, openai_server):
    logs = tmp_path_factory.mktemp("triton")
    # the shipped model when it is there; a tiny random one keeps plumbing tests alive without it
    shipped = (SHIPPED_GENERATOR / "config.json").exists()
    generator_dir = None if shipped else build_tiny_model(logs / "tiny-model")
    # SCAFFOLDING_TEST_REPOSITORY runs the same tests against another model repository
    repository = os.environ.get("SCAFFOLDING_TEST_REPOSITORY", DEFAULT_MODEL_REPOSITORY)
    variants = scaffolding_repository(
        tmp_path_factory.mktemp("scaffolding_variants"), openai_server
    )
    server = TritonServer(
        repository,
        generator_dir=generator_dir,
        log_file=logs / "tritonserver.log",
        extra_args=[
            f"--model-repository={ENGINE_REPOSITORY}",
            f"--model-repository={variants}",
            # tracing off until a test turns it on for one model (the trace API needs the key)
            f"--trace-config=triton,file={logs / 'trace.json'}",
            "--trace-config=level=OFF",
            "--trace-config=rate=1",
            "--trace-config=triton,log-frequency=1",
        ],
    )
    server.trace_file = logs / "trace.json"
    server.start()
    server.uses_shipped_models = shipped
    yield server
    server.stop()


@pytest.fixture
def http_client(triton):
    client = http.InferenceServerClient(triton.http_url)
    yield client
    client.close()


@pytest.fixture
def request_outcomes(http_client, triton):
    """``request_outcomes(model)``: how many requests the model has answered successfully
    and how many it failed, from Triton's own statistics."""

    def outcomes(model: str) -> tuple[int, int]:
        stats = http_client.get_inference_statistics(model, headers=triton.admin_headers)
        counts = stats["model_stats"][0]["inference_stats"]
        return int(counts["success"]["count"]), int(counts["fail"]["count"])

    return outcomes


@pytest.fixture
def generator_requests(request_outcomes):
    """How many requests the generator has completed, from Triton's own statistics."""
    return lambda: request_outcomes("generator")[0]
