"""`scaffolding-server` starts a real server, prints where it is, and stops cleanly."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scaffolding_backend.server import REPO_ROOT, free_port, shared_memory_regions

SHIPPED_GENERATOR = REPO_ROOT / "models" / "generator"

pytestmark = pytest.mark.integration


def process_groups() -> dict[int, int]:
    groups = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                groups[int(entry.name)] = os.getpgid(int(entry.name))
    return groups


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def ended(pid: int, within_s: float = 5.0) -> bool:
    """Whether the process is gone, or dead and waiting to be reaped by whoever adopted it."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.1)
    return False


def test_launcher_prints_urls_and_stops_without_orphans(tmp_path):
    from scaffolding_training.tiny_model import build_tiny_model

    ports = [free_port() for _ in range(3)]
    command = [
        sys.executable,
        "-m",
        "scaffolding_backend.server",
        "--http-port",
        str(ports[0]),
        "--grpc-port",
        str(ports[1]),
        "--metrics-port",
        str(ports[2]),
        "--log-file",
        str(tmp_path / "server.log"),
    ]
    if not (SHIPPED_GENERATOR / "config.json").exists():
        command += ["--generator-dir", str(build_tiny_model(tmp_path / "tiny"))]
    launcher = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines = []
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            line = launcher.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Ctrl-C" in line:
                break
        output = "".join(lines)
        assert f"http://localhost:{ports[0]}" in output and f"localhost:{ports[1]}" in output, (
            output
        )
        server_pids = [pid for pid in process_groups() if f"--http-port={ports[0]}" in cmdline(pid)]
        assert len(server_pids) == 1
        group = os.getpgid(server_pids[0])
        stubs = [
            pid
            for pid, g in process_groups().items()
            if g == group and "triton_python_backend_stub" in cmdline(pid)
        ]
        assert stubs, "the Python models run in stub processes"
        # tritonserver itself dies (as python_backend's abort kills it): the supervisor
        # starts it again on the same ports
        regions = shared_memory_regions(server_pids[0])
        # a stub that cannot see its server die (stuck, as a scaffolding stub in a BLS call
        # was after a crash under load): only its process group still names it
        os.kill(stubs[0], signal.SIGSTOP)
        os.kill(server_pids[0], signal.SIGABRT)
        restarted = ""
        while time.monotonic() < deadline and "serving again" not in restarted:
            restarted += launcher.stdout.readline()
        assert "tritonserver died (code -6)" in restarted and "restarting it" in restarted, (
            restarted
        )
        assert "tritonserver serving again" in restarted, restarted
        [new_pid] = [pid for pid in process_groups() if f"--http-port={ports[0]}" in cmdline(pid)]
        assert new_pid != server_pids[0]
        assert not [region for region in regions if region.exists()]  # the dead one's freed
        assert ended(stubs[0]), "the stuck stub outlived its server"
        new_group = os.getpgid(new_pid)
        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(timeout=60) == 0
        assert "stopping" in launcher.stdout.read()
        time.sleep(0.5)
        assert [pid for pid, g in process_groups().items() if g in (group, new_group)] == []
    finally:
        if launcher.poll() is None:  # a failed check: the launcher still stops its server
            launcher.send_signal(signal.SIGTERM)
            try:
                launcher.wait(timeout=60)
            except subprocess.TimeoutExpired:
                launcher.kill()


def test_sigterm_during_start_up_leaves_nothing_behind(tmp_path):
    ports = [free_port() for _ in range(3)]
    command = [
        sys.executable,
        "-m",
        "scaffolding_backend.server",
        "--http-port",
        str(ports[0]),
        "--grpc-port",
        str(ports[1]),
        "--metrics-port",
        str(ports[2]),
        "--log-file",
        str(tmp_path / "server.log"),
    ]
    launcher = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert "starting tritonserver" in launcher.stdout.readline()
        time.sleep(2)  # tritonserver is loading models now, not ready yet
        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(timeout=60) == 1
        assert "stopped by a signal" in launcher.stdout.read()
        time.sleep(0.5)
        assert not [pid for pid in process_groups() if f"--http-port={ports[0]}" in cmdline(pid)]
    finally:
        if launcher.poll() is None:
            launcher.kill()


def test_admin_apis_need_the_key_and_inference_does_not(triton):
    """Shared memory, the model repository, logging, statistics and traces answer only
    requests that carry the operator's key; health, metadata and inference stay open."""
    import json
    import urllib.error
    import urllib.request

    import tritonclient.grpc as grpc
    from tritonclient.utils import InferenceServerException

    base = f"http://{triton.http_url}"
    restricted = [
        ("GET", "/v2/systemsharedmemory/status", None),
        ("POST", "/v2/repository/index", b"{}"),
        ("POST", "/v2/logging", json.dumps({"log_verbose_level": 1}).encode()),
        ("GET", "/v2/models/generator/stats", None),
        ("GET", "/v2/trace/setting", None),
    ]
    for method, path, body in restricted:
        request = urllib.request.Request(base + path, data=body, method=method)
        try:
            urllib.request.urlopen(request, timeout=10)
            raise AssertionError(f"{path} answered without the key")
        except urllib.error.HTTPError as refused:
            assert refused.code == 403, path
        keyed = urllib.request.Request(
            base + path, data=body, method=method, headers=triton.admin_headers
        )
        with urllib.request.urlopen(keyed, timeout=10) as reply:
            assert reply.status == 200, path
    with grpc.InferenceServerClient(triton.grpc_url) as client:
        for call in (
            client.get_system_shared_memory_status,
            client.get_log_settings,
            lambda: client.get_inference_statistics("generator"),
        ):
            with pytest.raises(InferenceServerException, match="restricted"):
                call()
        assert client.get_log_settings(headers=triton.admin_grpc_headers)
        assert client.is_server_ready() and client.get_model_metadata("scaffolding_unary")
    with urllib.request.urlopen(f"{base}/v2/health/ready", timeout=10) as reply:
        assert reply.status == 200


def test_a_port_another_process_listens_on_is_refused_before_starting():
    """Otherwise the readiness check could reach the other server (an earlier one still
    shutting down) and call this one ready while it fails to bind."""
    import socket

    from scaffolding_backend.server import ServerError, TritonServer

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = TritonServer(grpc_port=port)
        with pytest.raises(ServerError, match=f"--grpc-port {port} on 127.0.0.1 is not free"):
            server.start()
        assert server.process is None  # nothing was started


def test_a_model_that_fails_to_load_is_named_with_its_reason(tmp_path):
    """The launcher's error says which model failed and why, not only "see the log"."""
    from scaffolding_backend.server import ServerError, TritonServer

    log = tmp_path / "server.log"
    log.write_text("an earlier run: failed to load 'reward' version 1: Internal: old news\"\n")
    server = TritonServer(generator_dir=str(tmp_path / "no-such-model"), log_file=log)
    with pytest.raises(ServerError) as raised:
        server.start()
    message = str(raised.value)
    assert "during start-up: model 'generator' failed to load:" in message, message
    assert "'model_dir'" in message and "no-such-model" in message and "does not exist" in message
    assert "old news" not in message  # only what this start wrote
    assert server.process is None or server.process.poll() is not None


@pytest.mark.parametrize(
    ("crash", "how"),
    [
        ("import os\nos.abort()\n", "was killed by SIGABRT"),
        # after a second: a stub seen alive is named by its model
        ("import os, time\ntime.sleep(1.5)\nos._exit(7)\n", "exited with status 7"),
    ],
)
def test_a_stub_that_dies_while_loading_fails_the_start_at_once(tmp_path, crash, how):
    """Triton 2.51 waits forever for a stub that dies while its model loads (a crash at
    import, the OOM killer); the start fails within seconds, naming it, instead of after
    the 300 s start-up timeout."""
    from scaffolding_backend.server import ServerError, TritonServer

    model = tmp_path / "repository" / "crashing"
    (model / "1").mkdir(parents=True)
    (model / "1" / "model.py").write_text(crash)
    (model / "config.pbtxt").write_text(
        'backend: "python"\nmax_batch_size: 0\n'
        'input [{ name: "x" data_type: TYPE_FP32 dims: [ 1 ] }]\n'
        'output [{ name: "y" data_type: TYPE_FP32 dims: [ 1 ] }]\n'
    )
    server = TritonServer(model.parent, log_file=tmp_path / "server.log", startup_timeout_s=120)
    started = time.monotonic()
    with pytest.raises(ServerError) as raised:
        server.start()
    message = str(raised.value)
    assert how in message and "during start-up" in message, message
    assert "'crashing'" in message, message
    assert time.monotonic() - started < 60
    assert server.process is None
