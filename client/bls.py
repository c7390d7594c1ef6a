"""``scaffolding-bench bls``: what the BLS path costs, with an engine that computes nothing.

The generator serves the echo engine (its setting ``engine: "echo"``): every request gets
the same completion after ``--delay-s``, so a request costs only Triton, the Python backend
and this project's code. perf_analyzer (``scripts/perf_analyzer.sh``) then drives, one after
the other and ``--pairs`` times:

* ``scaffolding`` running ``majority_vote`` with 8 samples at concurrency 16: 128 generator
  sub-requests in flight, sent over BLS;
* the ``generator`` at concurrency 128: as many requests in flight, sent by perf_analyzer's
  gRPC clients.

With ``--fold F`` the server's ``scaffolding`` folds the generations of a step into requests
of F prompts (its ``fold_generations``), and the generator gets the same requests straight:
batches of F at concurrency 128 / F.

Unfolded, each pair also measures ``minimal_bls`` (``perf/models/minimal_bls``, loaded from a
second model repository) at concurrency 16: a hand-written majority@8 over BLS that sends the
generator the same requests as ``scaffolding`` and does nothing else. It is the reference for
what BLS itself allows on this machine.

The ratio is scaffolding's sub-requests per second over the generator's requests per second
(equal to the ratio of their generations per second); the minimal model gets the same ratio.
For a server it starts, it also reads from /proc the CPU time each process spent, per
generation: where the BLS path's cost goes. perf_analyzer's own CPU time (the client's
share, which the direct path pays per generation and the BLS path per 8) is counted too,
from the resource usage of the finished perf_analyzer process.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from scaffolding_backend.server import REPO_ROOT

from .benchmark import Serving, serving

PERF_ANALYZER = REPO_ROOT / "scripts" / "perf_analyzer.sh"
PERF = REPO_ROOT / "perf"
MINIMAL_REPOSITORY = PERF / "models"
MINIMAL = "minimal_bls"  # perf/models/minimal_bls: a majority@8 with nothing but BLS calls
SAMPLES = 8  # perf/scaffolding_majority_vote_8.json, and the minimal model's
IN_FLIGHT = 16 * SAMPLES  # generations in flight on either path
SUMMARY = re.compile(r"Concurrency: (\d+), throughput: ([0-9.]+) infer/sec, latency (\d+) usec")


@dataclass
class Run:
    model: str
    concurrency: int
    requests_per_s: float
    generations_per_s: float
    latency_ms: float
    # prompts per request the generator answered during the run, from Triton's statistics:
    # what folding (or a client's batch) put in each
    prompts_per_generator_request: float = 0.0
    cpu_ms_per_generation: dict[str, float] = field(default_factory=dict)
    # of the whole machine's CPU time during the run, the share not idle
    machine_busy_percent: float = 0.0


def perf_analyzer(
    target: Serving, model: str, input_file: str, concurrency: int, window_ms: int, batch: int = 1
):
    """One perf_analyzer measurement: (requests/s, average latency in ms)."""
    command = [
        "bash", str(PERF_ANALYZER), "-m", model, "-i", "grpc", "--streaming",
        "-u", target.grpc_url, "--input-data", str(PERF / input_file),
        "--concurrency-range", str(concurrency), "-p", str(window_ms), "-s", "30",
    ]  # fmt: skip
    if batch > 1:
        command += ["-b", str(batch)]
    for name, value in target.admin_grpc_headers.items():
        command += ["-H", f"{name}:{value}"]
    # perf_analyzer measures at most 10 windows (its --max-trials); once a response has
    # failed with other requests in flight it can wait forever (perf_analyzer issue 320),
    # so it gets a bound, and the server's log says what failed
    limit_s = 60 + 12 * window_ms / 1000
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=limit_s)
    except subprocess.TimeoutExpired as stuck:
        printed = "".join(_text(part) for part in (stuck.stdout, stuck.stderr))
        raise RuntimeError(
            f"perf_analyzer on {model} did not end within {limit_s:.0f} s; stopped it:\n"
            f"{_tail(printed)}{target.logged_problems()}"
        ) from None
    found = SUMMARY.search(result.stdout)
    if result.returncode != 0 or found is None:
        raise RuntimeError(
            f"perf_analyzer failed on {model} (exit {result.returncode}):\n"
            f"{_tail(result.stdout + result.stderr)}{target.logged_problems()}"
        )
    # its throughput counts inferences: a request of a batch of B counts B
    return float(found.group(2)) / batch, int(found.group(3)) / 1000


def _text(output: str | bytes | None) -> str:
    """What a stopped process printed (the timeout hands it over as bytes)."""
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output or ""


def _tail(printed: str, lines: int = 15) -> str:
    return "\n".join(printed.splitlines()[-lines:])


def generator_counts(target: Serving) -> tuple[int, int]:
    """The requests the generator has answered and the prompts they held (Triton counts a
    request of B prompts as B inferences)."""
    import tritonclient.grpc as grpc

    headers = target.admin_grpc_headers
    with grpc.InferenceServerClient(target.grpc_url) as client:
        stats = client.get_inference_statistics("generator", headers=headers, as_json=True)
    model = stats["model_stats"][0]  # protobuf's JSON leaves out counts of 0
    answered = model["inference_stats"]["success"].get("count", 0)
    return int(answered), int(model.get("inference_count", 0))


def machine_cpu_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs since boot, from /proc/stat."""
    with open("/proc/stat") as stat:
        ticks = [int(value) for value in stat.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle and iowait
    return sum(ticks) - idle, sum(ticks)


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(
    target: Serving,
    model: str,
    input_file: str,
    concurrency: int,
    fan_out: int,
    window_ms: int,
    batch: int = 1,
) -> Run:
    """``fan_out``: generations per request."""
    before = target.cpu_seconds() if target.cpu_seconds else {}
    client_before = children_cpu_seconds()
    requests_before, prompts_before = generator_counts(target)
    busy_before, total_before = machine_cpu_ticks()
    started = time.monotonic()
    requests_per_s, latency_ms = perf_analyzer(
        target, model, input_file, concurrency, window_ms, batch
    )
    elapsed = time.monotonic() - started
    busy, total = machine_cpu_ticks()
    client_spent = children_cpu_seconds() - client_before
    requests, prompts = generator_counts(target)
    run = Run(model, concurrency, requests_per_s, requests_per_s * fan_out, latency_ms)
    run.machine_busy_percent = round(100 * (busy - busy_before) / max(1, total - total_before), 1)
    run.prompts_per_generator_request = round(
        (prompts - prompts_before) / max(1, requests - requests_before), 2
    )
    # perf_analyzer keeps its load on for the whole run: the generations of the run are
    # about its rate times its duration
    generations = run.generations_per_s * elapsed
    run.cpu_ms_per_generation["perf_analyzer"] = round(1000 * client_spent / generations, 3)
    if target.cpu_seconds:
        after = target.cpu_seconds()
        for name, seconds in after.items():
            spent = seconds - before.get(name, seconds)
            if spent > 0.05:
                run.cpu_ms_per_generation[name] = round(1000 * spent / generations, 3)
    return run


def main(argv: list[str]) -> int:
    from .benchmark import add_common_arguments

    parser = argparse.ArgumentParser(prog="scaffolding-bench bls", description=__doc__)
    add_common_arguments(parser)
    parser.add_argument("--pairs", type=int, default=3, help="scaffolding/generator pairs (3)")
    parser.add_argument("--delay-s", type=float, default=0.0, help="the echo engine's delay (0)")
    parser.add_argument(
        "--window-ms", type=int, default=4000, help="perf_analyzer's measurement window (4000)"
    )
    parser.add_argument(
        "--fold",
        type=int,
        choices=(1, 2, 4, 8),
        default=1,
        help="the scaffolding model's fold_generations; the generator then gets batches of as "
        "many prompts (1)",
    )
    args = parser.parse_args(argv)
    echo: dict[str, object] = {"engine": "echo", "echo_delay_s": args.delay_s}
    fold: dict[str, object] = {"fold_generations": args.fold}
    measured: list[Measured] = []
    with serving(
        args,
        generator_overrides=echo,
        scaffolding_overrides=fold,
        extra_repositories=[MINIMAL_REPOSITORY],
    ) as target:
        if args.grpc_url:
            print(
                "note: measuring a running server; its generator must serve the echo engine "
                f"(SCAFFOLDING_GENERATOR_OVERRIDES='{json.dumps(echo)}') and its scaffolding "
                f"model fold by {args.fold} (SCAFFOLDING_CONFIG_OVERRIDES='{json.dumps(fold)}')",
                file=sys.stderr,
            )
        # the minimal model sends a request per generation: a reference for unfolded runs
        with_minimal = args.fold == 1 and model_ready(target, MINIMAL)
        if args.fold == 1 and not with_minimal:
            print(
                f"note: the server does not serve {MINIMAL}, measured without it (serve it "
                f"with tritonserver's --model-repository={MINIMAL_REPOSITORY}; "
                "scaffolding-server passes it on after --)",
                file=sys.stderr,
            )
        for index in range(args.pairs):
            print(f"  pair {index + 1}/{args.pairs} ...", file=sys.stderr, flush=True)
            through_bls = measure(
                target, "scaffolding", "scaffolding_majority_vote_8.json", 16, SAMPLES,
                args.window_ms,
            )  # fmt: skip
            minimal = None
            if with_minimal:
                minimal = measure(target, MINIMAL, "minimal_bls.json", 16, SAMPLES, args.window_ms)
            direct = measure(
                target, "generator", "generator.json", IN_FLIGHT // args.fold, args.fold,
                args.window_ms, batch=args.fold,
            )  # fmt: skip
            measured.append(Measured(through_bls, direct, minimal))
    ratios = [one.ratio(one.scaffolding) for one in measured]
    result: dict[str, object] = {
        "delay_s": args.delay_s,
        "fold": args.fold,
        "pairs": [
            {
                "scaffolding": asdict(one.scaffolding),
                "generator": asdict(one.direct),
                **({MINIMAL: asdict(one.minimal)} if one.minimal else {}),
            }
            for one in measured
        ],
        "ratios": [round(ratio, 3) for ratio in ratios],
        "median_ratio": round(statistics.median(ratios), 3),
    }
    minimal_ratios = [one.ratio(one.minimal) for one in measured if one.minimal]
    if minimal_ratios:
        result["minimal_ratios"] = [round(ratio, 3) for ratio in minimal_ratios]
        result["median_minimal_ratio"] = round(statistics.median(minimal_ratios), 3)
    medians = {"scaffolding": ratios, **({"minimal BLS": minimal_ratios} if minimal_ratios else {})}
    print_table(measured, medians, args.delay_s, args.fold)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


@dataclass
class Measured:
    """One pair: scaffolding, the generator straight, and (unfolded) the minimal model."""

    scaffolding: Run
    direct: Run
    minimal: Run | None = None

    def ratio(self, through_bls: Run) -> float:
        return through_bls.generations_per_s / self.direct.generations_per_s


def model_ready(target: Serving, model: str) -> bool:
    import tritonclient.grpc as grpc
    from tritonclient.utils import InferenceServerException

    with grpc.InferenceServerClient(target.grpc_url) as client:
        try:
            return bool(client.is_model_ready(model))
        except InferenceServerException:  # a model the server does not know
            return False


def print_table(
    measured: list[Measured], medians: dict[str, list[float]], delay_s: float, fold: int
) -> None:
    """``medians``: each BLS path's ratios, by the name its rows have."""
    folded = f", {fold} prompts per generator request" if fold > 1 else ""
    table = Table(
        title=f"BLS path, echo engine (delay {delay_s} s), {IN_FLIGHT} generations in flight"
        f"{folded}: generations/s through BLS ÷ the generator's sent straight; "
        "CPU ms per generation"
    )
    columns = (
        "pair", "path", "req/s", "gen/s", "ms", "prompts/req", "CPU busy %", "server",
        "BLS model", "generator", "client", "ratio",
    )  # fmt: skip
    for column in columns:
        table.add_column(column, justify="right")

    def ms(value: float | None) -> str:
        return "" if value is None else f"{value:.2f}"

    for index, one in enumerate(measured, start=1):
        paths = [
            ("scaffolding", one.scaffolding),
            ("minimal BLS", one.minimal),
            ("direct", one.direct),
        ]
        for position, (path, run) in enumerate(paths):
            if run is None:
                continue
            cpu = run.cpu_ms_per_generation
            through_bls = run is not one.direct
            table.add_row(
                str(index) if position == 0 else "",
                path,
                f"{run.requests_per_s:.1f}",
                f"{run.generations_per_s:.0f}",
                f"{run.latency_ms:.0f}",
                f"{run.prompts_per_generator_request:g}",
                f"{run.machine_busy_percent:.0f}",
                ms(cpu.get("tritonserver")),
                # the stub that makes the BLS calls, whichever model it is
                ms(cpu.get(run.model)) if through_bls else "",
                ms(cpu.get("generator")),
                ms(cpu.get("perf_analyzer")),
                f"{one.ratio(run):.2f}" if through_bls else "",
            )
    for path, ratios in medians.items():
        median = f"{statistics.median(ratios):.2f}"
        table.add_row("median", path, *[""] * (len(columns) - 3), median)
    # rich folds a table to 80 columns when stdout is not a terminal; a file gets it whole
    Console(width=None if sys.stdout.isatty() else 180).print(table)
