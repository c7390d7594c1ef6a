"""One real tritonserver per test session, over the real model repository, on free ports."""

import os

import pytest
import tritonclient.http as http

from scaffolding_backend.server import DEFAULT_MODEL_REPOSITORY, REPO_ROOT, TritonServer
from scaffolding_training.tiny_model import build_tiny_model

SHIPPED_GENERATOR = REPO_ROOT / "models" / "generator"


@pytest.fixture(scope="session")
def triton(tmp_path_factory):
    logs = tmp_path_factory.mktemp("triton")
    # the shipped model when it is there; a tiny random one keeps plumbing tests alive without it
    generator_dir = (
        None
        if (SHIPPED_GENERATOR / "config.json").exists()
        else build_tiny_model(logs / "tiny-model")
    )
    # SCAFFOLDING_TEST_REPOSITORY runs the same tests against another model repository
    repository = os.environ.get("SCAFFOLDING_TEST_REPOSITORY", DEFAULT_MODEL_REPOSITORY)
    server = TritonServer(
        repository, generator_dir=generator_dir, log_file=logs / "tritonserver.log"
    )
    server.start()
    server.uses_shipped_models = generator_dir is None
    yield server
    server.stop()


@pytest.fixture
def http_client(triton):
    client = http.InferenceServerClient(triton.http_url)
    yield client
    client.close()


@pytest.fixture
def generator_requests(http_client):
    """How many requests the generator has completed, from Triton's own statistics."""

    def count() -> int:
        stats = http_client.get_inference_statistics("generator")
        return int(stats["model_stats"][0]["inference_stats"]["success"]["count"])

    return count
