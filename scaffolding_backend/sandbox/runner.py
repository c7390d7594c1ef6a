"""Runs untrusted Python programs, each in a fresh, isolated process (standard library only).

How a run is isolated (``isolation="namespaces"``, the default), and why:

* **A fresh process per run**, started through util-linux ``unshare`` with new mount,
  network, pid, IPC and UTS namespaces (and a user namespace when the server is not root,
  which is what lets an unprivileged server create the others). No daemon, no pool of
  reusable workers: nothing a program does can reach the next program.
* **No network**: the new network namespace has only a loopback device that is down, so
  loopback and outside connections both fail.
* **The file system**: the run gets a new root, a small tmpfs that holds read-only binds of
  ``/usr`` (with the ``/bin``, ``/lib*`` links or directories) and of the interpreter's own
  installation, the device nodes ``null``, ``zero``, ``random`` and ``urandom``, and a
  size-limited tmpfs ``/tmp``, its only writable place. The setup ``pivot_root``s into it and
  detaches the old root, so ``/etc``, ``/root``, ``/home``, the checkout, the model
  repository and ``/proc`` do not exist for the program (a chroot would leave the old root
  one escape away). The new root itself is then made read-only. We chose this over
  bubblewrap because ``unshare`` ships with util-linux on every Linux machine and the rest
  is a few system calls made with ``ctypes``.
* **Privileges**: the capability bounding set is emptied, every capability dropped and
  ``no_new_privs`` set before the exec, so set-uid binaries under ``/usr`` give nothing.
  When the server runs as root there is no user namespace (root would keep its real uid
  and RLIMIT_NPROC does not hold for uid 0): the setup switches to a uid of its own per
  concurrent run slot instead (``uid_base + (pid % 4096) * slots + slot``: distinct per
  server process), which owns no file on the machine.
* **Limits** (``setrlimit`` right before the exec): CPU seconds (SIGXCPU, then SIGKILL a
  second later), address space, processes and threads (RLIMIT_NPROC, counted per user
  namespace or per slot uid, so one run's fork bomb does not starve the next), open files,
  file size and no core files; the wall-clock deadline and the output cap are enforced by
  the runner, which kills the run when either is passed.
* **Environment**: the interpreter runs as ``python -I -S -B -X utf8 /main.py`` with an
  empty environment: no server variables, no site-packages, no user site, no bytecode.
* **Clean end**: the program is pid 1 of its pid namespace; when it ends, or when the runner
  kills it, the kernel kills every process left in the namespace (zombies and daemons that
  ``setsid`` away included). The runner finds pid 1 through ``/proc/<unshare>/task/*/children``
  and SIGKILLs it together with ``unshare``'s process group.

No seccomp filter: Python's standard library cannot load one without hand-written BPF,
and the namespaces above already take away what a filter would (network, file system,
other processes). A program may still create nested user namespaces; inside them it sees
nothing more than its own new root, and its mounts stay locked read-only.

``isolation="rlimits"`` is the documented weaker mode for machines where namespaces are
unavailable (some CI runners, containers without ``CLONE_NEWUSER``): the same fresh process,
empty environment, rlimits, private working directory and process-group kill, but **no
network or file-system isolation** and, for a root server, no process limit. A model must
ask for it explicitly; ``Sandbox.check()`` refuses ``namespaces`` where it does not work,
naming the mechanism that failed.
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import queue
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

INSIDE = Path(__file__).with_name("inside.py")
SETUP_FAILED = 125  # inside.py's exit status when the setup itself failed


class Isolation(str, enum.Enum):
    NAMESPACES = "namespaces"
    RLIMITS = "rlimits"


class KillReason(str, enum.Enum):
    """Why a run ended other than by itself (empty when it did)."""

    NONE = ""
    TIMEOUT = "timeout"  # wall-clock deadline
    CPU = "cpu"  # RLIMIT_CPU (SIGXCPU / SIGKILL)
    MEMORY = "memory"  # RLIMIT_AS: the program died of MemoryError or a failed allocation
    OUTPUT_LIMIT = "output_limit"  # stdout + stderr passed the cap
    FILE_SIZE = "file_size"  # RLIMIT_FSIZE (SIGXFSZ)
    SIGNAL = "signal"  # another signal (the program's own os.kill, a crash)
    SANDBOX_ERROR = "sandbox_error"  # the isolation could not be set up: not the program's fault


class SandboxUnavailable(RuntimeError):
    """The requested isolation does not work on this machine; the message names what failed."""


@dataclass(frozen=True)
class Limits:
    wall_s: float = 5.0
    cpu_s: int = 2
    memory_bytes: int = 256 << 20
    processes: int = 16  # processes and threads
    open_files: int = 64
    file_bytes: int = 1 << 20
    tmp_bytes: int = 8 << 20
    output_bytes: int = 64 << 10  # stdout and stderr together


@dataclass
class RunResult:
    stdout: str
    stderr: str
    exit_status: int  # the exit code, or -N when killed by signal N
    wall_s: float
    cpu_s: float
    killed_reason: KillReason
    output_truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_status == 0 and self.killed_reason is KillReason.NONE


def default_python() -> str:
    """The interpreter of this Python installation (not a virtual environment's link, whose
    directory need not be visible inside the sandbox)."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (
        Path(sys.base_prefix) / "bin" / version,
        Path(sys.base_prefix) / "bin" / "python3",
    ):
        if candidate.exists():
            return str(candidate.resolve())
    return os.path.realpath(getattr(sys, "_base_executable", sys.executable))


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                found += [int(child) for child in handle.read().split()]
    return found


def _decode(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


class Sandbox:
    """Runs programs isolated; thread-safe, at most ``slots`` runs at once (callers beyond
    that wait for a slot)."""

    def __init__(
        self,
        limits: Limits | None = None,
        *,
        isolation: Isolation = Isolation.NAMESPACES,
        python: str = "",
        slots: int = 8,
        uid_base: int = 61000,
    ):
        self.limits = limits or Limits()
        self.isolation = Isolation(isolation)
        self.python = python or default_python()
        self.unshare = shutil.which("unshare") or "unshare"
        self.as_root = os.geteuid() == 0
        self._slots: queue.Queue[int] = queue.Queue()
        for slot in range(slots):
            self._slots.put(slot)
        # two servers (or model instances) on one machine must not share uids: RLIMIT_NPROC
        # counts per uid, so one's fork bomb would starve the other's runs
        self.first_uid = uid_base + (os.getpid() % 4096) * slots

    # ------------------------------------------------------------------ configuration

    def _binds(self) -> list[str]:
        paths = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"]
        prefix = os.path.realpath(sys.base_prefix)
        python_dir = os.path.dirname(os.path.dirname(self.python))
        for extra in (prefix, python_dir):
            if not any(extra == path or extra.startswith(path + "/") for path in paths):
                paths.append(extra)
        return [path for path in paths if os.path.lexists(path)]

    def _command(self) -> list[str]:
        # no --fork: inside.py forks pid 1 itself and reports its wait status
        namespaces = ["--mount", "--net", "--pid", "--ipc", "--uts"]
        if not self.as_root:
            namespaces = ["--user", "--map-root-user", *namespaces]
        return [self.unshare, *namespaces, "--", self.python, "-I", "-S", "-B", str(INSIDE)]

    def _settings(self, root: str, slot: int, status_fd: int) -> dict:
        limits = self.limits
        return {
            "status_fd": status_fd,
            "mode": self.isolation.value,
            "root": root,
            "python": self.python,
            "binds": self._binds(),
            "tmp_options": f"size={limits.tmp_bytes},nr_inodes=4096,mode=1777",
            "uid": self.first_uid + slot if self.as_root else None,
            "rlimits": {
                "cpu": limits.cpu_s,
                "as": limits.memory_bytes,
                "nproc": limits.processes,
                "nofile": limits.open_files,
                "fsize": limits.file_bytes,
                "core": 0,
            },
        }

    # ------------------------------------------------------------------ checks

    def check(self) -> None:
        """Raise SandboxUnavailable, naming the mechanism, unless a run works here with the
        configured isolation. Called once when the model loads."""
        if not os.access(self.python, os.X_OK):
            raise SandboxUnavailable(f"the interpreter {self.python!r} is not executable")
        if self.isolation is Isolation.NAMESPACES:
            if shutil.which("unshare") is None:
                raise SandboxUnavailable(
                    "namespaces: util-linux 'unshare' is not on PATH (or set isolation=rlimits)"
                )
            probes = [("user namespace", ["--user", "--map-root-user"])] if not self.as_root else []
            probes += [
                ("mount namespace", ["--mount"]),
                ("network namespace", ["--net"]),
                ("pid namespace", ["--pid", "--fork"]),
                ("IPC and UTS namespaces", ["--ipc", "--uts"]),
            ]
            for name, flags in probes:
                user = (
                    ["--user", "--map-root-user"]
                    if not self.as_root and flags[0] != "--user"
                    else []
                )
                result = subprocess.run(
                    [self.unshare, *user, *flags, "--", "true"],
                    capture_output=True,
                    text=True,
                    env={},
                    timeout=30,
                )
                if result.returncode != 0:
                    raise SandboxUnavailable(
                        f"namespaces: cannot create a {name} ({result.stderr.strip()}); "
                        "set isolation=rlimits for the weaker mode (no network or file-system "
                        "isolation)"
                    )
        probe = self.run("import os, sys\nprint(sum(range(5)), os.getcwd(), sys.flags.isolated)")
        expected = "10 / 1" if self.isolation is Isolation.NAMESPACES else "10 "
        if not probe.ok or not probe.stdout.startswith(expected):
            raise SandboxUnavailable(
                f"{self.isolation.value}: a test run failed (exit {probe.exit_status}, "
                f"{probe.killed_reason.value or 'not killed'}): {probe.stderr.strip()[-500:]}"
            )

    # ------------------------------------------------------------------ runs

    def run(self, code: str | bytes, stdin: str | bytes = b"") -> RunResult:
        """Run one program to its end (or its limits) and say how it went."""
        code_bytes = (
            code.encode("utf-8", errors="surrogateescape") if isinstance(code, str) else code
        )
        stdin_bytes = stdin.encode() if isinstance(stdin, str) else stdin
        slot = self._slots.get()
        root = tempfile.mkdtemp(prefix="sandbox-")
        try:
            return self._run(code_bytes, stdin_bytes, root, slot)
        finally:
            shutil.rmtree(root, ignore_errors=True)
            self._slots.put(slot)

    def _run(self, code: bytes, stdin: bytes, root: str, slot: int) -> RunResult:
        if self.isolation is Isolation.NAMESPACES:
            command = self._command()
        else:
            command = [self.python, "-I", "-S", "-B", str(INSIDE)]
        status_read, status_write = os.pipe()
        command.append(json.dumps(self._settings(root, slot, status_write)))
        started = time.perf_counter()
        try:
            process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env={},
                cwd="/",
                start_new_session=True,
                close_fds=True,
                pass_fds=(status_write,),
            )
        finally:
            os.close(status_write)
        try:
            to_send = f"{len(code)}\n".encode() + code + stdin
            reason, out, err, truncated = self._communicate(process, to_send, started)
            status, cpu_s, timed_out = self._reap(process, started + self.limits.wall_s)
            os.set_blocking(status_read, False)
            with contextlib.suppress(BlockingIOError):
                reported = os.read(status_read, 64).strip()
                if reported:
                    status = int(reported)  # the program's own, as its parent saw it
        finally:
            os.close(status_read)
        if timed_out and reason is KillReason.NONE:
            reason = KillReason.TIMEOUT
        wall_s = time.perf_counter() - started
        exit_status = os.waitstatus_to_exitcode(status)
        if reason is KillReason.NONE:
            reason = self._reason_of(exit_status, err, cpu_s >= self.limits.cpu_s)
        return RunResult(
            stdout=_decode(out),
            stderr=_decode(err),
            exit_status=exit_status,
            wall_s=wall_s,
            cpu_s=cpu_s,
            killed_reason=reason,
            output_truncated=truncated,
        )

    def _communicate(
        self, process: subprocess.Popen, to_send: bytes, started: float
    ) -> tuple[KillReason, bytes, bytes, bool]:
        """Feed stdin, collect stdout and stderr up to the cap, until both close or a limit
        is passed (then the run is killed)."""
        assert process.stdin and process.stdout and process.stderr
        buffers = {process.stdout.fileno(): bytearray(), process.stderr.fileno(): bytearray()}
        cap = self.limits.output_bytes
        deadline = started + self.limits.wall_s
        reason = KillReason.NONE
        truncated = False
        with selectors.DefaultSelector() as selector:
            for stream in (process.stdout, process.stderr):
                os.set_blocking(stream.fileno(), False)
                selector.register(stream.fileno(), selectors.EVENT_READ)
            stdin_fd = process.stdin.fileno()
            os.set_blocking(stdin_fd, False)
            selector.register(stdin_fd, selectors.EVENT_WRITE)
            sent = 0
            open_outputs = 2
            while open_outputs:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    reason = KillReason.TIMEOUT
                    break
                for key, _ in selector.select(timeout=min(remaining, 0.5)):
                    if key.fd == stdin_fd:
                        try:
                            sent += os.write(stdin_fd, to_send[sent : sent + 65536])
                        except (BrokenPipeError, BlockingIOError) as error:
                            if isinstance(error, BlockingIOError):
                                continue
                            sent = len(to_send)
                        if sent >= len(to_send):
                            selector.unregister(stdin_fd)
                            process.stdin.close()
                        continue
                    chunk = os.read(key.fd, 65536)
                    if not chunk:
                        selector.unregister(key.fd)
                        open_outputs -= 1
                        continue
                    buffers[key.fd] += chunk
                    total = sum(len(b) for b in buffers.values())
                    if total > cap:
                        excess = total - cap
                        del buffers[key.fd][len(buffers[key.fd]) - excess :]
                        reason = KillReason.OUTPUT_LIMIT
                        truncated = True
                        open_outputs = 0
                        break
        if reason is not KillReason.NONE:
            self._kill(process)
        for stream in (process.stdin, process.stdout, process.stderr):
            with contextlib.suppress(OSError):
                stream.close()
        out, err = buffers.values()
        return reason, bytes(out), bytes(err), truncated

    def _kill(self, process: subprocess.Popen, *, setup_too: bool = False) -> None:
        """SIGKILL the program: pid 1 of its pid namespace, which takes every process of the
        namespace with it (its process group in the rlimits mode). The setup process then
        reaps it and reports; ``setup_too`` kills that one as well."""
        for child in _children(process.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(child, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child, signal.SIGKILL)
        if setup_too:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)

    def _reap(self, process: subprocess.Popen, deadline: float) -> tuple[int, float, bool]:
        """Wait for the setup process (the outputs have closed, or the program was killed),
        killing the program at the deadline and the setup process a second after; return
        its wait status, the CPU seconds it and the program used, and whether the deadline
        killed the program."""
        timed_out = False
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            now = time.perf_counter()
            if not timed_out and now > deadline:  # outputs closed, still running
                self._kill(process)
                timed_out = True
            if now > deadline + 1.0:
                self._kill(process, setup_too=True)
            time.sleep(0.001)
        process.returncode = os.waitstatus_to_exitcode(status)
        return status, usage.ru_utime + usage.ru_stime, timed_out

    @staticmethod
    def _reason_of(exit_status: int, stderr: bytes, used_all_cpu: bool) -> KillReason:
        if exit_status == SETUP_FAILED and stderr.startswith(b"sandbox setup failed"):
            return KillReason.SANDBOX_ERROR
        if exit_status == -signal.SIGXCPU or (exit_status == -signal.SIGKILL and used_all_cpu):
            return KillReason.CPU
        if exit_status == -signal.SIGXFSZ:
            return KillReason.FILE_SIZE
        if exit_status != 0 and b"MemoryError" in stderr[-2000:]:
            return KillReason.MEMORY
        if exit_status < 0:
            return KillReason.SIGNAL
        return KillReason.NONE
