"""A model process that dies heals without anyone's help: its requests in flight end (with
an error) within 30 s, and the model serves again within 60 s. One server of its own,
watched by the launcher's supervisor."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import time
from pathlib import Path

import pytest

from client.api import ScaffoldingClient, ScaffoldingError
from scaffolding_backend.server import (
    DEFAULT_MODEL_REPOSITORY,
    TritonServer,
    shared_memory_regions,
)
from scaffolding_backend.supervisor import Supervisor, stub_processes, stubs_of

from .engines import FIXTURES

pytestmark = pytest.mark.integration

QUESTION = (
    "Mia owns 33 eggs. She loses 19 eggs. She finds 29 more eggs. How many eggs does Mia have now?"
)
# enough work that requests are still in flight a second in, even on a fast machine: 4 x 64
# samples at a high temperature (which ends a sample after about 60 tokens)
LONG = {"samples": 64, "max_tokens": 400, "temperature": 3.0}


# tests/fixtures/fault_models.py: StallingScaffolding, its watchdog set to 2 s
STALLING = "scaffolding_stalling"
STALL_EXIT_S = 2
# the question it stops at (fault_models.STALL: that module imports only inside a stub)
STALL = "stall"


def _stalling_repository(root: Path) -> Path:
    """The request/response scaffolding model's config, one instance, served by the fixture."""
    config = (DEFAULT_MODEL_REPOSITORY / "scaffolding_unary" / "config.pbtxt").read_text()
    config = config.replace("count: 4", "count: 1")
    (root / STALLING / "1").mkdir(parents=True)
    (root / STALLING / "config.pbtxt").write_text(
        f'name: "{STALLING}"\n{config}\nparameters [\n'
        f'  {{ key: "loop_stall_exit_s" value: {{ string_value: "{STALL_EXIT_S}" }} }}\n]\n'
    )
    (root / STALLING / "1" / "model.py").write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(FIXTURES)!r})\n"
        "from fault_models import StallingScaffolding as TritonPythonModel  # noqa: E402, F401\n"
    )
    return root


@pytest.fixture(scope="module")
def healed_server(tmp_path_factory):
    logs = tmp_path_factory.mktemp("healing")
    stalling = _stalling_repository(tmp_path_factory.mktemp("stalling"))
    server = TritonServer(
        DEFAULT_MODEL_REPOSITORY,
        log_file=logs / "tritonserver.log",
        extra_args=[f"--model-repository={stalling}"],
    ).start()
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


def _ask(
    url: str, protocol: str, method: str, params: dict, *, model: str = "", question: str = QUESTION
) -> str:
    try:
        models = {"unary_model": model} if model else {}
        with ScaffoldingClient(url, protocol, **models) as client:
            client.ask(
                question, method, params, on_event=(lambda _: None) if protocol == "grpc" else None
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


def test_a_model_process_whose_event_loop_stops_for_good_ends_and_heals(healed_server):
    """What a Python backend deadlock does to a stub (scaffolding_backend/triton/watchdog.py),
    done on purpose: the request fails soon after the watchdog's time instead of hanging,
    the stacks of the stopped process are in the server's log, and the model serves again."""
    server, supervisor = healed_server
    log = server.log_file
    log_start = log.stat().st_size
    before = len(supervisor.events)
    started = time.monotonic()
    outcome = _ask(
        server.http_url, "http", "cot", {"max_tokens": 64}, model=STALLING, question=STALL
    )
    ended_within = time.monotonic() - started
    assert outcome.startswith("error"), outcome
    assert STALL_EXIT_S <= ended_within < 30
    with log.open(errors="replace") as text:
        text.seek(log_start)
        written = text.read()
    # faulthandler's report, written without the GIL, names the thread that stopped the loop
    assert f"Timeout (0:00:0{STALL_EXIT_S})!" in written
    assert "in execute" in written and "fault_models.py" in written
    deadline = started + 60
    while len(supervisor.events) == before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert len(supervisor.events) > before, supervisor.reports
    assert STALLING in supervisor.events[-1]["models"]
    assert _ask(server.http_url, "http", "cot", {"max_tokens": 64}, model=STALLING) == "ok"
    print(f"the stalled request ended {ended_within:.1f} s in; {supervisor.events[-1]}")
