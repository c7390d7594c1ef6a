"""``scaffolding-server``: start a real Triton server over this repository's models.

Uses ``tritonserver`` from PATH when there is one (NGC containers); otherwise the
one inside the ``nvidia-pytriton`` wheel, which needs three things set up by
hand: the Python-backend stub for this interpreter next to the backend library,
this venv's ``bin`` first on PATH (the stub imports from the ``python`` found
there) and libpython on the library path.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .sandbox import SandboxUnavailable
from .service.config import ConfigError, GeneratorConfig, SandboxConfig, ScaffoldingConfig
from .supervisor import (
    Supervisor,
    describe_wait_status,
    process_stat,
    stub_census,
    stub_processes,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_REPOSITORY = REPO_ROOT / "model_repository"
# Triton APIs that change the server or read its internals: only for callers with the key
RESTRICTED_APIS = "shared-memory,model-repository,statistics,trace,logging"
ADMIN_HEADER = "admin-key"
ADMIN_KEY_ENV = "SCAFFOLDING_ADMIN_KEY"
# Triton's Python backend holds one of these server threads for each decoupled BLS request
# until it ends; past the pool (32 by default), sub-requests and stop requests queue behind
# running generations. Enough for the scaffolding models' bls_threads together.
PYTHON_BACKEND_THREADS = 512
CACHE_DIR = Path(os.environ.get("SCAFFOLDING_CACHE", Path.home() / ".cache" / "triton-scaffolding"))

# a string parameter of a config.pbtxt: key: "name" value: { string_value: "..." }
PBTXT_PARAMETER = re.compile(r'key:\s*"(\w+)"\s*,?\s*value:\s*\{\s*string_value:\s*"([^"]*)"\s*\}')


# Triton's log line for a model that failed to load (model_lifecycle.cc)
LOAD_FAILURE = re.compile(r"failed to load '([^']+)' version \d+: (?:\w+: )?(.*)\"$", re.M)
ESCAPED_NEWLINE = "\\n"  # a backslash and an n, as Triton's log writes a newline
STUB_REAP_S = 2.0  # a dead stub Triton has not reaped by then, it never will
LOADING = re.compile(r'"loading: ([^:"]+):\d+"')  # model_lifecycle.cc, as a load begins
# a Python stub's shared-memory file (python_backend names it after a fresh uuid)
PYTHON_BACKEND_REGION = re.compile(r"/dev/shm/triton_python_backend_shm_region_[0-9a-f-]+")


class ServerError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class TritonInstall:
    binary: Path
    backend_dir: Path | None  # None: the binary's own default
    env: dict[str, str] = field(default_factory=dict)


def _wheel_install() -> TritonInstall:
    try:
        import pytriton
    except ImportError:
        raise ServerError(
            "no tritonserver on PATH and the nvidia-pytriton wheel is not installed"
        ) from None
    root = Path(pytriton.__file__).parent / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise ServerError(
            f"the nvidia-pytriton wheel has no Python-backend stub for Python {version}"
        )
    # The wheel ships the backend without a stub; assemble a complete copy we own, one per
    # wheel location so that two checkouts (or a CI clone) never write into each other's.
    wheel_key = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:10]
    backend_dir = CACHE_DIR / f"backends-py{version}-{wheel_key}"
    python_backend = backend_dir / "python"
    python_backend.mkdir(parents=True, exist_ok=True)
    for source in [*(root / "backends" / "python").iterdir(), stub]:
        if source.is_file():
            _install_file(source, python_backend / source.name)
    # the stub finds its bundled libraries (libcudart, ...) through an $ORIGIN-relative
    # rpath that no longer holds for our copy, so name that directory explicitly
    bundled_libs = root.parent.parent / "nvidia_pytriton.libs"
    env = {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "LD_LIBRARY_PATH": os.pathsep.join(
            str(p)
            for p in [
                sysconfig.get_config_var("LIBDIR"),
                bundled_libs,
                os.environ.get("LD_LIBRARY_PATH", ""),
            ]
            if p
        ),
    }
    return TritonInstall(binary=root / "bin" / "tritonserver", backend_dir=backend_dir, env=env)


def _install_file(source: Path, target: Path) -> None:
    """Copy unless already identical, through a temporary file and a rename: a running
    server has the old file mapped, and writing into it in place would crash that server."""
    if (
        target.exists()
        and target.stat().st_size == source.stat().st_size
        and target.read_bytes() == source.read_bytes()
    ):
        return
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.copy2(source, temporary)
    os.replace(temporary, target)


def find_tritonserver() -> TritonInstall:
    on_path = shutil.which("tritonserver")
    if on_path:
        return TritonInstall(binary=Path(on_path), backend_dir=None)
    return _wheel_install()


def shared_memory_regions(server_pid: int) -> set[Path]:
    """The Python backend's shared-memory files the server maps: one per stub, the dead
    stubs' included (from /proc)."""
    try:
        maps = Path(f"/proc/{server_pid}/maps").read_text()
    except OSError:
        return set()
    return {Path(found) for found in PYTHON_BACKEND_REGION.findall(maps)}


def _add_overrides(env: dict[str, str], variable: str, settings: dict[str, object]) -> None:
    """Merge ``settings`` into the JSON object of config overrides in ``env[variable]``."""
    if settings:
        env[variable] = json.dumps({**json.loads(env.get(variable) or "{}"), **settings})


class TritonServer:
    """A tritonserver child process; a context manager that always stops it."""

    def __init__(
        self,
        model_repository: Path | str = DEFAULT_MODEL_REPOSITORY,
        *,
        http_port: int | None = None,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
        generator_dir: str | None = None,
        generator_overrides: dict[str, object] | None = None,
        scaffolding_overrides: dict[str, object] | None = None,
        log_file: Path | str | None = None,
        extra_args: list[str] | None = None,
        startup_timeout_s: float = 300.0,
        env: dict[str, str] | None = None,
        address: str = "127.0.0.1",
        admin_key: str | None = None,
    ):
        self.model_repository = Path(model_repository).resolve()
        self.http_port = http_port or free_port()
        self.grpc_port = grpc_port or free_port()
        self.metrics_port = metrics_port or free_port()
        self.generator_dir = generator_dir
        # GeneratorConfig settings for the generator model (e.g. {"engine": "echo"})
        self.generator_overrides = generator_overrides or {}
        # ScaffoldingConfig settings for the scaffolding models (e.g. {"fold_generations": 8})
        self.scaffolding_overrides = scaffolding_overrides or {}
        self.log_file = Path(log_file) if log_file else None
        self._log_start = 0  # where this start's lines begin in the log file
        self.extra_args = extra_args or []
        self.startup_timeout_s = startup_timeout_s
        self.env = env or {}
        self.address = address
        # the admin APIs answer only requests with this header value; without one set, a
        # random key nobody is told keeps them closed
        self.admin_key = admin_key or os.environ.get(ADMIN_KEY_ENV) or secrets.token_hex(16)
        self.process: subprocess.Popen | None = None
        self.restarting = False  # the supervisor is restarting it: not an unexpected exit
        self._regions: set[Path] = set()  # its stubs' shared memory, read once it was ready
        # models of the repository left unloaded, and why (start() decides)
        self.not_loaded: dict[str, str] = {}

    @property
    def admin_headers(self) -> dict[str, str]:
        """The HTTP header that opens the restricted APIs (statistics, logging, ...)."""
        return {ADMIN_HEADER: self.admin_key}

    @property
    def admin_grpc_headers(self) -> dict[str, str]:
        """The same for gRPC, where Triton prefixes the header's name."""
        return {f"triton-grpc-protocol-{ADMIN_HEADER}": self.admin_key}

    @property
    def http_url(self) -> str:
        return f"localhost:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"localhost:{self.grpc_port}"

    def command(self, install: TritonInstall) -> list[str]:
        command = [
            str(install.binary),
            f"--model-repository={self.model_repository}",
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            f"--http-address={self.address}",
            f"--grpc-address={self.address}",
            f"--metrics-address={self.address}",
            f"--http-restricted-api={RESTRICTED_APIS}:{ADMIN_HEADER}={self.admin_key}",
            f"--grpc-restricted-protocol={RESTRICTED_APIS}:{ADMIN_HEADER}={self.admin_key}",
            # explicit model control: the supervisor reloads a model whose stub died
            "--model-control-mode=explicit",
            *self._load_models(),
            "--allow-metrics=true",
            "--strict-readiness=true",
            "--exit-on-error=true",
            "--log-info=true",
            f"--backend-config=python,thread-pool-size={PYTHON_BACKEND_THREADS}",
        ]
        if install.backend_dir is not None:
            command.append(f"--backend-directory={install.backend_dir}")
        return command + self.extra_args

    def _load_models(self) -> list[str]:
        if not self.not_loaded:
            return ["--load-model=*"]
        flag = "--model-repository="
        repositories = [self.model_repository] + [
            Path(arg[len(flag) :]) for arg in self.extra_args if arg.startswith(flag)
        ]
        models = sorted(
            path.name
            for repository in repositories
            for path in repository.iterdir()
            if (path / "config.pbtxt").is_file() and path.name not in self.not_loaded
        )
        return [f"--load-model={model}" for model in models]

    def _check_ports_free(self) -> None:
        """Refuse ports another process listens on. Otherwise the readiness check could
        reach that server (an earlier one still shutting down, say) and call this one ready
        while it fails to bind and exits."""
        for name, port in (
            ("--http-port", self.http_port),
            ("--grpc-port", self.grpc_port),
            ("--metrics-port", self.metrics_port),
        ):
            with socket.socket() as probe:
                # as the servers bind: a port in TIME_WAIT from a stopped server is free
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((self.address, port))
                except OSError as error:
                    raise ServerError(
                        f"{name} {port} on {self.address} is not free ({error.strerror}): "
                        "another server (or one still shutting down) listens there; stop it "
                        "or choose another port"
                    ) from None

    def _check_sandbox(self, env: dict[str, str]) -> None:
        """The ``sandbox`` model refuses to load where its isolation does not work, and
        --exit-on-error would take the whole server down with it: check first, and leave
        it unloaded (the launcher says why) so that everything else serves."""
        config = self.model_repository / "sandbox" / "config.pbtxt"
        if not config.is_file():
            return
        parameters = dict(PBTXT_PARAMETER.findall(config.read_text()))
        try:
            SandboxConfig.load(parameters, env).sandbox().check()
        except (ConfigError, SandboxUnavailable) as error:
            self.not_loaded["sandbox"] = str(error)

    @staticmethod
    def exit_on_sigterm() -> None:
        """Make SIGTERM raise ``SystemExit`` in the main thread, as Ctrl-C raises
        ``KeyboardInterrupt``, so a caller's ``finally: server.stop()`` runs: the server
        lives in its own process group and would otherwise outlive a terminated client."""
        if (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        ):
            signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))

    def start(self, should_stop=lambda: False) -> TritonServer:
        """Start and wait until ready; ``should_stop()`` turning true (a signal) aborts the wait."""
        if not self.model_repository.is_dir():
            raise ServerError(f"model repository {self.model_repository} does not exist")
        install = find_tritonserver()
        env = {**os.environ, **install.env, **self.env}
        generator = dict(self.generator_overrides)
        if self.generator_dir:
            generator["model_dir"] = str(Path(self.generator_dir).resolve())
        _add_overrides(env, GeneratorConfig.overrides_env, generator)
        _add_overrides(env, ScaffoldingConfig.overrides_env, self.scaffolding_overrides)
        self._check_ports_free()
        self._check_sandbox(env)
        log = contextlib.nullcontext(subprocess.DEVNULL)
        if self.log_file and self.log_file.exists():
            self._log_start = self.log_file.stat().st_size
        # the child keeps its own copy of the descriptor
        with open(self.log_file, "ab") if self.log_file else log as output:
            # its own process group: stopping the group also stops every Python stub
            self.process = subprocess.Popen(
                self.command(install),
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_ready(should_stop)
        except BaseException:
            self.stop()
            raise
        # a server that dies has no /proc to read them from when it is stopped
        self._regions = shared_memory_regions(self.process.pid)
        return self

    def _wait_ready(self, should_stop) -> None:
        process = self.process
        assert process is not None
        deadline = time.monotonic() + self.startup_timeout_s
        url = f"http://{self.http_url}/v2/health/ready"
        stubs: dict[int, str] = {}  # the stubs seen so far, and their model
        dead_since: dict[int, float] = {}  # unreaped dead stubs, from when
        while time.monotonic() < deadline:
            if should_stop():
                raise ServerError("stopped by a signal during start-up")
            live, dead = stub_census(process.pid)
            stubs.update(live)
            dead_since = {pid: dead_since.get(pid, time.monotonic()) for pid in dead}
            # Triton reaps the stubs it lets end (auto-complete, a failed initialize) at once
            left_dead = {
                pid: status
                for pid, status in dead.items()
                if time.monotonic() - dead_since[pid] > STUB_REAP_S
            }
            if left_dead:
                raise ServerError(self._dead_stubs_reason(left_dead, stubs))
            if process.poll() is not None:
                raise ServerError(
                    f"tritonserver exited with code {process.returncode} during start-up"
                    f"{self._load_failures()}{self._log_hint()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise ServerError(
            f"tritonserver was not ready within {self.startup_timeout_s:.0f} s"
            f"{self._load_failures()}"
        )

    def _dead_stubs_reason(self, dead: dict[int, int], stubs: dict[int, str]) -> str:
        written = self.logged_since_start()
        loading = [
            model
            for model in dict.fromkeys(LOADING.findall(written))
            if f"successfully loaded '{model}'" not in written
        ]
        reasons = []
        for pid, status in dead.items():
            model = stubs.get(pid)
            named = (
                f"the Python stub of model '{model}'"
                if model
                else "a Python stub"
                + (f" (models still loading: {', '.join(map(repr, loading))})" if loading else "")
            )
            reasons.append(f"{named} {describe_wait_status(status)} during start-up")
        return (
            "; ".join(reasons)
            + " (Triton does not notice: a load would wait for it forever)"
            + f"{self._load_failures()}{self._log_hint()}"
        )

    def _log_hint(self) -> str:
        """Where a start-up failure's details are."""
        return f"; see {self.log_file}" if self.log_file else "; run with --log-file to see why"

    def logged_since_start(self) -> str:
        """What this start of the server wrote to its log file ("" without one)."""
        if self.log_file is None or not self.log_file.exists():
            return ""
        with open(self.log_file, "rb") as log:
            log.seek(self._log_start)
            return log.read().decode(errors="replace")

    def _load_failures(self) -> str:
        """Why models failed to load, from what this start wrote to the log: the first line
        of each model's error (Triton writes newlines in it as ``\\n``, and the Python
        stack follows a blank line)."""
        written = self.logged_since_start()
        reasons = [
            f"model '{model}' failed to load: {message.split(ESCAPED_NEWLINE)[0]}"
            for model, message in LOAD_FAILURE.findall(written)
        ]
        return ": " + "; ".join(reasons) if reasons else ""

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time (user and system) the server process and each model's stubs have spent."""
        assert self.process is not None, "the server is not running"
        processes = [(self.process.pid, "tritonserver"), *stub_processes(self.process.pid)]
        spent: dict[str, float] = {}
        for pid, name in processes:
            try:
                fields = process_stat(pid)
            except OSError:
                continue  # gone in the meantime
            ticks = int(fields[11]) + int(fields[12])  # utime and stime, in clock ticks
            spent[name] = spent.get(name, 0.0) + ticks / os.sysconf("SC_CLK_TCK")
        return spent

    def restart(self) -> None:
        """Stop the server and start it again on the same ports (every connection ends)."""
        self.restarting = True
        try:
            # not gracefully: a dead stub's streams would hold a graceful shutdown for 30 s
            self.stop(graceful=False)
            self.start()
        finally:
            self.restarting = False

    def stop(self, timeout_s: float = 30.0, *, graceful: bool = True) -> None:
        """Stop the server and every stub. Gracefully, Triton first lets the requests in
        flight finish (up to 30 s); otherwise the whole process group is killed at once."""
        if self.process is None:
            return
        regions = self._regions | shared_memory_regions(self.process.pid)
        # started in a session of its own, the server leads its process group, whose id is
        # its pid: that still names the stubs once the server itself has died (a stub
        # stuck in a BLS call outlives a crashed server otherwise)
        group = self.process.pid
        if not graceful:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        with contextlib.suppress(ProcessLookupError):  # stubs that outlived their server
            os.killpg(group, signal.SIGKILL)
        # a killed server leaves its stubs' regions in /dev/shm (about 1 MB each, for good);
        # one stopped gracefully has removed them already
        for region in regions:
            with contextlib.suppress(OSError):
                region.unlink(missing_ok=True)
        self._regions = set()
        self.process = None

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scaffolding-server", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--model-repository", default=str(DEFAULT_MODEL_REPOSITORY))
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument(
        "--generator-dir",
        help="serve this Hugging Face model directory instead of the configured one",
    )
    parser.add_argument(
        "--log-file",
        help="tritonserver's log (default: runs/tritonserver.log)",
        default=str(REPO_ROOT / "runs" / "tritonserver.log"),
    )
    parser.add_argument("--startup-timeout", type=float, default=300.0)
    parser.add_argument(
        "--no-heal",
        action="store_true",
        help="do not reload a model (or restart the server) when a model's stub process dies",
    )
    parser.add_argument(
        "--address",
        default="127.0.0.1",
        help="the address to serve on (default: loopback only; 0.0.0.0 for every interface)",
    )
    parser.add_argument("extra", nargs="*", help="further tritonserver options, after --")
    args = parser.parse_args(argv)
    Path(args.log_file).parent.mkdir(parents=True, exist_ok=True)
    server = TritonServer(
        args.model_repository,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        generator_dir=args.generator_dir,
        log_file=args.log_file,
        extra_args=args.extra,
        startup_timeout_s=args.startup_timeout,
        address=args.address,
    )
    stopping = False

    def on_signal(signum, _frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(
        f"starting tritonserver over {server.model_repository} (log: {args.log_file}) ...",
        flush=True,
    )
    try:
        server.start(should_stop=lambda: stopping)
    except ServerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(
        f"ready.\n  HTTP     http://{server.http_url}\n  gRPC     {server.grpc_url}\n"
        f"  metrics  http://localhost:{server.metrics_port}/metrics",
        flush=True,
    )
    opened = (
        "with your SCAFFOLDING_ADMIN_KEY"
        if os.environ.get(ADMIN_KEY_ENV)
        else "set SCAFFOLDING_ADMIN_KEY to use them"
    )
    print(
        f"  admin APIs ({RESTRICTED_APIS}) need the header '{ADMIN_HEADER}': {opened}", flush=True
    )
    for model, reason in server.not_loaded.items():
        print(
            f"  not loaded: {model}: {reason} (pal and pal_vote fail until it loads)",
            file=sys.stderr,
            flush=True,
        )
    print("Ctrl-C stops it.", flush=True)
    supervisor = (
        None if args.no_heal else Supervisor(server, report=lambda line: print(line, flush=True))
    )
    if supervisor is not None:
        supervisor.start()
    code = 0
    try:
        while not stopping:
            process = server.process
            if server.restarting:
                pass
            elif process is None:  # a restart that did not come back
                code = 1
                print("tritonserver could not be restarted; see its log", file=sys.stderr)
                break
            elif process.poll() is not None and (supervisor is None or supervisor.gave_up):
                code = process.returncode or 1
                print(
                    f"tritonserver exited unexpectedly with code {process.returncode}",
                    file=sys.stderr,
                )
                break
            time.sleep(0.2)
    finally:
        if supervisor is not None:
            supervisor.stop()
        print("stopping ...", flush=True)
        server.stop()
    return code


if __name__ == "__main__":
    sys.exit(main())
