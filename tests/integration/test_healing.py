"""A model process that dies heals without anyone's help: its requests in flight end (with
an error) within 30 s, and the model serves again within 60 s. One server of its own,
watched by the launcher's supervisor."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import time

import pytest

from client.api import ScaffoldingClient, ScaffoldingError
from scaffolding_backend.server import (
    DEFAULT_MODEL_REPOSITORY,
    TritonServer,
    shared_memory_regions,
)
from scaffolding_backend.supervisor import Supervisor, stub_processes, stubs_of

pytestmark = pytest.mark.integration

QUESTION = (
    "Mia owns 33 eggs. She loses 19 eggs. She finds 29 more eggs. How many eggs does Mia have now?"
)
# enough work that requests are still in flight a second in, even on a fast machine: 4 x 64
# samples at a high temperature (which ends a sample after about 60 tokens)
LONG = {"samples": 64, "max_tokens": 400, "temperature": 3.0}


@pytest.fixture(scope="module")
def healed_server(tmp_path_factory):
    logs = tmp_path_factory.mktemp("healing")
    server = TritonServer(DEFAULT_MODEL_REPOSITORY, log_file=logs / "tritonserver.log").start()
    reports: list[str] = []
    supervisor = Supervisor(server, interval_s=0.5, report=reports.append)
    supervisor.reports = reports
    supervisor.start()
    yield server, supervisor
    supervisor.stop()
    server.stop()


def _stub_pid(server, model: str) -> int:
    """One stub process of ``model`` under the server."""
    return next(pid for pid, name in stub_processes(server.process.pid) if name == model)


def _ask(url: str, protocol: str, method: str, params: dict) -> str:
    try:
        with ScaffoldingClient(url, protocol) as client:
            client.ask(
                QUESTION, method, params, on_event=(lambda _: None) if protocol == "grpc" else None
            )
        return "ok"
    except ScaffoldingError as error:
        return f"error: {error}"


@pytest.mark.parametrize(
    ("model", "protocol", "method", "params"),
    [
        ("generator", "http", "majority_vote", LONG),  # decoupled too: healed by a restart
        ("reward", "http", "best_of_n", LONG),
        ("scaffolding_unary", "http", "majority_vote", LONG),
        ("scaffolding", "grpc", "majority_vote", LONG),
    ],
)
def test_a_killed_model_process_heals(healed_server, model, protocol, method, params):
    server, supervisor = healed_server
    url = server.http_url if protocol == "http" else server.grpc_url
    before = len(supervisor.events)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        in_flight = [pool.submit(_ask, url, protocol, method, params) for _ in range(4)]
        time.sleep(1.0)
        if all(future.done() for future in in_flight):
            pytest.fail(f"nothing was in flight: {[future.result() for future in in_flight]}")
        regions = shared_memory_regions(server.process.pid)
        killed = time.monotonic()
        os.kill(_stub_pid(server, model), signal.SIGKILL)
        outcomes = [future.result(timeout=30) for future in in_flight]  # no request hangs
        ended_within = time.monotonic() - killed
    assert ended_within < 30
    assert any(outcome.startswith("error") for outcome in outcomes) or all(
        o == "ok" for o in outcomes
    )
    deadline = killed + 60
    while len(supervisor.events) == before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert len(supervisor.events) > before, (
        f"the supervisor did not heal the model: {supervisor.reports}"
    )
    event = supervisor.events[-1]
    assert model in event["models"]
    assert event["action"] == ("restart" if model in ("scaffolding", "generator") else "reload")
    assert _ask(url, protocol, "cot", {"max_tokens": 64}) == "ok"
    serving_after = time.monotonic() - killed
    assert serving_after < 60
    print(
        f"{model}: in-flight requests ended {ended_within:.1f} s after the kill; {event['action']} "
        f"took {event['seconds']} s; serving again {serving_after:.1f} s after the kill; {outcomes}"
    )
    assert stubs_of(server.process.pid)[model] >= 1
    # the shared memory of the stubs that died or were killed went with them
    still_there = {region for region in regions if region.exists()}
    assert still_there <= shared_memory_regions(server.process.pid), still_there
