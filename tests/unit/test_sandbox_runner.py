"""The sandbox runner on its own (no Triton): real runs in real processes. The isolation
the machine offers is used (namespaces, else the weaker rlimits mode); checks that need
the namespaces skip, saying so, where they are missing."""

from __future__ import annotations

import pytest

from scaffolding_backend.sandbox import Isolation, KillReason, Limits, Sandbox, SandboxUnavailable
from scaffolding_backend.service.config import ConfigError, SandboxConfig

LIMITS = Limits(wall_s=3.0, cpu_s=1, memory_bytes=256 << 20, output_bytes=4096)


@pytest.fixture(scope="module")
def sandbox():
    strict = Sandbox(LIMITS, isolation=Isolation.NAMESPACES, slots=4)
    try:
        strict.check()
        return strict
    except SandboxUnavailable:
        weak = Sandbox(LIMITS, isolation=Isolation.RLIMITS, slots=4)
        weak.check()
        return weak


@pytest.fixture
def namespaces(sandbox):
    if sandbox.isolation is not Isolation.NAMESPACES:
        pytest.skip("Linux namespaces are unavailable here: the rlimits mode is tested instead")
    return sandbox


def test_a_program_reads_stdin_and_prints(sandbox):
    result = sandbox.run(
        "import sys\nprint(sum(int(x) for x in sys.stdin.read().split()))", "1 2 3"
    )
    assert result.ok and result.stdout == "6\n" and result.stderr == ""
    assert result.killed_reason is KillReason.NONE and 0 < result.wall_s < LIMITS.wall_s


def test_a_failing_program_reports_its_status_and_error(sandbox):
    result = sandbox.run("raise SystemExit(3)")
    assert result.exit_status == 3 and not result.ok
    result = sandbox.run("1 / 0")
    assert result.exit_status == 1 and "ZeroDivisionError" in result.stderr


def test_limits_end_runs_with_their_reason(sandbox):
    assert sandbox.run("import time\ntime.sleep(30)").killed_reason is KillReason.TIMEOUT
    # a wall clock well past the CPU limit, so that a busy machine still hits the CPU limit
    spinning = Sandbox(Limits(wall_s=30.0, cpu_s=1), isolation=sandbox.isolation)
    spin = spinning.run("while True: pass")
    assert spin.killed_reason is KillReason.CPU and spin.cpu_s >= 1, spin
    flood = sandbox.run("while True: print('x' * 100)")
    assert flood.killed_reason is KillReason.OUTPUT_LIMIT and flood.output_truncated
    assert len(flood.stdout.encode()) <= LIMITS.output_bytes
    assert sandbox.run("x = bytearray(1 << 30)").killed_reason is KillReason.MEMORY


def test_the_environment_is_empty_and_python_isolated(sandbox):
    result = sandbox.run("import os, sys\nprint(dict(os.environ), sys.flags.isolated, sys.path)")
    assert result.ok
    assert "PATH" not in result.stdout and "SCAFFOLDING" not in result.stdout
    assert " 1 " in result.stdout and "site-packages" not in result.stdout


def test_namespaces_hide_the_server_and_the_network(namespaces):
    code = (
        "import os, socket\n"
        "print(sorted(os.listdir('/')))\n"
        "print(os.path.exists('/etc/passwd'), os.path.exists('/proc/1'))\n"
        "try:\n"
        "    socket.create_connection(('127.0.0.1', 22), timeout=1)\n"
        "except OSError as error:\n"
        "    print('no network', error.errno)\n"
    )
    result = namespaces.run(code)
    assert result.ok, result.stderr
    top = eval(result.stdout.splitlines()[0])
    assert "etc" not in top and "work" not in top and "home" not in top and "proc" not in top
    assert result.stdout.splitlines()[1] == "False False"
    assert "no network" in result.stdout


def test_a_missing_interpreter_refuses_to_load():
    with pytest.raises(SandboxUnavailable, match="not executable"):
        Sandbox(LIMITS, python="/nonexistent/python").check()


def test_sandbox_config_refuses_bad_values():
    assert SandboxConfig.load({}, environ={}).isolation == "namespaces"
    with pytest.raises(ConfigError, match="isolation"):
        SandboxConfig.load({"isolation": "none"}, environ={})
    with pytest.raises(ConfigError, match="wall_s"):
        SandboxConfig.load({"wall_s": "0"}, environ={})
    with pytest.raises(ConfigError, match="memory_bytes"):
        SandboxConfig.load({"memory_bytes": "1000"}, environ={})
    overridden = SandboxConfig.load({}, environ={"SCAFFOLDING_SANDBOX_OVERRIDES": '{"cpu_s": 4}'})
    assert overridden.cpu_s == 4
