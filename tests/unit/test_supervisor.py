"""The supervisor's rule for a tritonserver that keeps dying: restart it, at most
``max_server_restarts`` times within ``restart_window_s``, then give up so that the launcher
exits with the server's code. The "server" here is a process that exits at once, standing in
for a tritonserver that aborts right after each start (the real restart is tested through the
launcher in tests/integration/test_launcher.py)."""

import subprocess
import sys
import time

from scaffolding_backend.supervisor import Supervisor


class DyingServer:
    """What the supervisor uses of a TritonServer, around a process that exits with 3."""

    log_file = None

    def __init__(self) -> None:
        self.restarting = False
        self.starts = 0
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.starts += 1
        self.process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
        self.process.wait()

    def restart(self) -> None:
        self.restarting = True
        try:
            self.start()
        finally:
            self.restarting = False


def test_a_server_that_keeps_dying_is_restarted_then_given_up_on():
    server = DyingServer()
    reports: list[str] = []
    supervisor = Supervisor(server, interval_s=0.05, report=reports.append, max_server_restarts=2)
    supervisor.start()
    deadline = time.monotonic() + 20
    while not supervisor.gave_up and time.monotonic() < deadline:
        time.sleep(0.05)
    supervisor.stop()
    supervisor.join(timeout=5)
    assert supervisor.gave_up
    assert server.starts == 3  # the first start and two restarts
    assert [event["action"] for event in supervisor.events] == ["server restart"] * 2
    assert reports[-1] == (
        "supervisor: tritonserver died (code 3) 3 times within 600 s; not restarting it again"
    )


def test_deaths_further_apart_than_the_window_are_each_restarted():
    server = DyingServer()
    supervisor = Supervisor(
        server,
        interval_s=0.05,
        report=lambda _: None,
        max_server_restarts=1,
        restart_window_s=0.0,  # every earlier death has left the window
    )
    supervisor.start()
    deadline = time.monotonic() + 20
    while server.starts < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    supervisor.stop()
    supervisor.join(timeout=5)
    assert server.starts >= 5 and not supervisor.gave_up
