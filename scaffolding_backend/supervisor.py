"""Keeps a launched tritonserver serving when one of its Python-backend stubs dies.

Triton 2.51 notices a dead stub only when a request reaches it, keeps reporting the model
ready, and never starts the stub again. The supervisor watches the server's stub
processes (its children) and, when a model has lost one:

* a request/response model (``generator``, ``reward``, ``scaffolding_unary``, ...) is
  unloaded and loaded again through the model-repository API: its requests in flight
  fail at once with "Stub process ... is not healthy", and it serves again within seconds;
* a decoupled model (``scaffolding``) is different: Triton never sends the final response
  of a dead stub's streams, so they would hang; the whole server is restarted, which
  ends every stream with a transport error the client sees at once.

* tritonserver itself dying is restarted too, at most ``max_server_restarts`` times in
  ``restart_window_s``; past that the supervisor gives up (``gave_up``) and the launcher
  exits with the server's code. One way it dies, seen here: python_backend r24.10 (Triton
  2.51) calls a stub "not healthy" when it has not answered for a second, and the server
  can then abort with ``boost::interprocess::lock_exception`` (Triton issue 8882 reports
  the same abort on 2.55); stopping the generator's stub for 2.5 s under load did it in 2
  of 5 tries.

What it did goes to the launcher's output, one line each.
"""

from __future__ import annotations

import json
import re
import signal
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path

STUB = "triton_python_backend_stub"
MODEL_PATH = re.compile(r"/([^/]+)/[0-9]+/model\.py$")
DECOUPLED = re.compile(r"decoupled\s*:\s*true")


def process_stat(pid: int | str) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after the command name (state, parent, ..., utime
    and stime at 11 and 12); OSError once the process is gone."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def stub_census(server_pid: int) -> tuple[list[tuple[int, str]], dict[int, int]]:
    """The server's stub processes, from one walk of /proc: the live ones with their
    model's name, and the dead ones it has not reaped with their wait status
    (``/proc/<pid>/stat`` field 52). Triton reaps a stub that ends as it expects; one that
    dies while loading its model stays a zombie, and the load waits for it forever."""
    live, dead = [], {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = process_stat(entry.name)
            # the kernel keeps the first 15 characters of a command's name
            if int(fields[1]) != server_pid or (entry / "comm").read_text().strip() != STUB[:15]:
                continue
            if fields[0] == "Z":  # a zombie keeps no command line
                dead[int(entry.name)] = int(fields[49])
                continue
            arguments = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue  # gone in the meantime
        model = (
            MODEL_PATH.search(arguments[1].decode(errors="replace")) if len(arguments) > 1 else None
        )
        if model:
            live.append((int(entry.name), model.group(1)))
    return live, dead


def stub_processes(server_pid: int) -> list[tuple[int, str]]:
    """The live stub processes under the server process, with their model's name."""
    return stub_census(server_pid)[0]


def describe_wait_status(status: int) -> str:
    number = status & 0x7F
    if not number:
        return f"exited with status {status >> 8}"
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = f"signal {number}"
    oom = " (what the kernel's out-of-memory killer sends)" if number == signal.SIGKILL else ""
    return f"was killed by {name}{oom}"


def stubs_of(server_pid: int) -> Counter[str]:
    """How many stub processes each model has under the server process."""
    return Counter(model for _, model in stub_processes(server_pid))


def is_decoupled(model_repository: Path, model: str) -> bool:
    config = model_repository / model / "config.pbtxt"
    return config.is_file() and bool(DECOUPLED.search(config.read_text()))


class Supervisor(threading.Thread):
    """Watches ``server`` (a started ``TritonServer``) until ``stop()``."""

    def __init__(
        self,
        server,  # TritonServer; not typed here to keep the import graph one-way
        *,
        interval_s: float = 1.0,
        report: Callable[[str], None] = print,
        max_server_restarts: int = 3,
        restart_window_s: float = 600.0,
    ):
        super().__init__(name="triton-supervisor", daemon=True)
        self.server = server
        self.interval_s = interval_s
        self.report = report
        self.max_server_restarts = max_server_restarts
        self.restart_window_s = restart_window_s
        self.events: list[dict] = []  # what it did, for tests and logs
        self.gave_up = False  # tritonserver kept dying: the launcher takes over
        self._server_deaths: list[float] = []
        self._stopping = threading.Event()
        self._expected: Counter[str] = Counter()

    def stop(self) -> None:
        self._stopping.set()

    def _baseline(self) -> None:
        process = self.server.process
        self._expected = stubs_of(process.pid) if process is not None else Counter()

    def run(self) -> None:
        self._baseline()
        while not self._stopping.wait(self.interval_s):
            process = self.server.process
            if self.gave_up or process is None or self.server.restarting:
                continue
            if process.poll() is not None:
                self._server_died(process.returncode)
                continue
            current = stubs_of(process.pid)
            lost = sorted(
                model for model, count in self._expected.items() if current[model] < count
            )
            if not lost:
                continue
            started = time.monotonic()
            decoupled = [
                model for model in lost if is_decoupled(self.server.model_repository, model)
            ]
            try:
                if decoupled:
                    self.report(
                        f"supervisor: the stub of {', '.join(lost)} died; restarting the server"
                    )
                    self.server.restart()
                    action = "restart"
                else:
                    self.report(f"supervisor: the stub of {', '.join(lost)} died; reloading")
                    for model in lost:
                        self._reload(model)
                    action = "reload"
            except Exception as error:  # keep watching; the next round tries again
                self.report(f"supervisor: could not heal {', '.join(lost)}: {error}")
                continue
            seconds = time.monotonic() - started
            self.events.append({"models": lost, "action": action, "seconds": round(seconds, 2)})
            self.report(
                f"supervisor: {', '.join(lost)} serving again after {seconds:.1f} s ({action})"
            )
            self._baseline()

    def _server_died(self, code: int) -> None:
        now = time.monotonic()
        self._server_deaths = [
            died for died in self._server_deaths if now - died < self.restart_window_s
        ] + [now]
        if len(self._server_deaths) > self.max_server_restarts:
            self.gave_up = True
            self.report(
                f"supervisor: tritonserver died (code {code}) {len(self._server_deaths)} times "
                f"within {self.restart_window_s:.0f} s; not restarting it again"
            )
            return
        log = f" (its log: {self.server.log_file})" if self.server.log_file else ""
        self.report(f"supervisor: tritonserver died (code {code}){log}; restarting it")
        try:
            self.server.restart()
        except Exception as error:  # the next round sees it dead again and counts it
            self.report(f"supervisor: could not restart tritonserver: {error}")
            return
        seconds = time.monotonic() - now
        self.events.append({"models": [], "action": "server restart", "seconds": round(seconds, 2)})
        self.report(f"supervisor: tritonserver serving again after {seconds:.1f} s")
        self._baseline()

    def _post(self, path: str) -> None:
        request = urllib.request.Request(
            f"http://{self.server.http_url}{path}",
            data=json.dumps({}).encode(),
            method="POST",
            headers=self.server.admin_headers,
        )
        with urllib.request.urlopen(request, timeout=300) as reply:
            reply.read()

    def _reload(self, model: str) -> None:
        # loading a model that is loaded and unchanged does nothing: unload it first
        self._post(f"/v2/repository/models/{model}/unload")
        self._post(f"/v2/repository/models/{model}/load")
