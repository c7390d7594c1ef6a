"""The loop watchdog (scaffolding_backend/triton/watchdog.py) in a process of its own: it ends
the process whose event loop stopped, and leaves alone one that runs or that stopped it.
(The same inside a real stub: test_healing.py.)"""

from __future__ import annotations

import subprocess
import sys
import textwrap

PROGRAM = textwrap.dedent(
    """
    import asyncio, ctypes, sys, time
    from scaffolding_backend.triton.watchdog import LoopWatchdog

    async def main(action):
        watchdog = LoopWatchdog(0.5)
        watchdog.start()
        watchdog.start()  # again: a no-op
        await asyncio.sleep(1.5)  # a running loop keeps it quiet, well past 0.5 s
        if action == "stop":
            watchdog.stop()
        # what a Python backend deadlock does: this thread blocked in C with the GIL held
        ctypes.PyDLL(None).sleep(2)
        print("still here", flush=True)

    asyncio.run(main(sys.argv[1]))
    """
)


def _run(action: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", PROGRAM, action], capture_output=True, text=True, timeout=30
    )


def test_a_loop_that_stops_ends_its_process_with_every_threads_stack():
    ended = _run("stall")
    assert ended.returncode == 1
    assert "still here" not in ended.stdout
    assert "Timeout (0:00:00.500000)!" in ended.stderr
    assert "in main" in ended.stderr  # where the loop's thread stopped


def test_a_stopped_watchdog_ends_nothing():
    ended = _run("stop")
    assert ended.returncode == 0, ended.stderr
    assert "still here" in ended.stdout
