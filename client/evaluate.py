"""``scaffolding-eval``: accuracy and cost of methods and budgets on a JSONL dataset.

    scaffolding-eval                                   # every method over budgets 1 2 4 8 16
    scaffolding-eval --methods majority_vote best_of_n:aggregation=min --budgets 1 4 16
    scaffolding-eval --preset model-card --limit 200   # the shipped models' card numbers
    scaffolding-eval --generator-dir models/reasoner --methods cot dynasor_cot --limit 200

Each dataset line is ``{"question": ..., "answer": ...}`` (the shipped test split
by default). Requests go to a running server (``--url``) or to one this command
starts, at most ``--concurrency`` at a time. It prints a table (accuracy with a
95% Wilson interval, mean generated tokens, mean sub-requests, p50/p95 latency)
and writes it as JSON plus a PNG of accuracy against generated tokens.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from tqdm import tqdm

from scaffolding_backend.reasoning import answers_equal, parse_reference

from .api import ScaffoldingClient, ScaffoldingError

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATASET = REPO_ROOT / "data" / "test.jsonl"
DEFAULT_BUDGETS = (1, 2, 4, 8, 16)

# How a budget N (solutions' worth of sampling) becomes each method's knobs.
BUDGETS: dict[str, Callable[[int], dict[str, Any]]] = {
    "majority_vote": lambda n: {"samples": n},
    "best_of_n": lambda n: {"samples": n},
    "weighted_best_of_n": lambda n: {"samples": n},
    # search-and-learn's shape: 4 continuations per kept beam
    "beam_search": lambda n: {"samples": n, "beam_width": max(1, n // 4)},
    "dvts": lambda n: {"samples": n, "beam_width": min(n, 4)},
    "tree_of_thoughts": lambda n: {"beam_width": max(1, n // 4), "children_per_node": min(n, 4)},
    "mcts": lambda n: {"iterations": 2 * n, "children_per_node": 2},
    # early exit: N is the most samples; they come in waves of 4 until the vote is settled
    "adaptive_consistency": lambda n: {"samples": n, "wave": min(n, 4)},
    "deepconf": lambda n: {"samples": n, "wave": min(n, 4), "warmup": min(n, 4)},
    "pal_vote": lambda n: {"samples": n},
}
ALL_METHODS = (
    "majority_vote",
    "best_of_n",
    "weighted_best_of_n",
    "beam_search",
    "dvts",
    "mcts",
    "tree_of_thoughts",
    "adaptive_consistency",
    "deepconf",
    "pal_vote",
)

# The shipped models' card: one configuration each, no budget sweep.
MODEL_CARD = (
    ("greedy", "cot", {}),
    ("single sample (T=0.8)", "majority_vote", {"samples": 1}),
    ("majority@8", "majority_vote", {"samples": 8}),
    ("best-of-8 ORM", "best_of_n", {"samples": 8, "reward_model": "reward_orm"}),
    ("best-of-8 PRM-min", "best_of_n", {"samples": 8, "aggregation": "min"}),
)


@dataclass
class Run:
    label: str
    method: str
    params: dict[str, Any]
    budget: int | None = None


@dataclass
class Record:
    correct: bool
    output_tokens: int
    sub_requests: int
    latency_s: float
    error: str | None = None


@dataclass
class Summary:
    label: str
    method: str
    budget: int | None
    params: dict[str, Any]
    questions: int
    accuracy: float
    ci95: tuple[float, float]
    mean_output_tokens: float
    mean_sub_requests: float
    p50_latency_s: float
    p95_latency_s: float
    errors: int
    first_error: str | None = field(default=None)
    correct: list[bool] = field(default_factory=list, repr=False)  # per question, in dataset order


def wilson_interval(successes: int, total: int, z: float = 1.96) -> tuple[float, float]:
    if total == 0:
        return (0.0, 0.0)
    p = successes / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return (max(0.0, centre - half), min(1.0, centre + half))


def parse_method_spec(spec: str) -> tuple[str, str, dict[str, Any]]:
    """``METHOD`` or ``METHOD:key=value,key=value`` -> (label, method, params)."""
    method, _, options = spec.partition(":")
    params: dict[str, Any] = {}
    for option in filter(None, options.split(",")):
        key, sep, value = option.partition("=")
        if not sep:
            raise SystemExit(f"method option {option!r} in {spec!r} is not key=value")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return spec, method, params


def plan_runs(specs: list[str], budgets: list[int]) -> list[Run]:
    runs = []
    for spec in specs:
        label, method, params = parse_method_spec(spec)
        if method in BUDGETS:
            runs += [
                Run(f"{label}@{n}", method, {**BUDGETS[method](n), **params}, n) for n in budgets
            ]
        else:
            runs.append(Run(label, method, params))
    return runs


def load_dataset(path: Path, limit: int | None) -> list[dict[str, str]]:
    rows = []
    with open(path) as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                row = json.loads(line)
                if "question" not in row or "answer" not in row:
                    raise SystemExit(f"{path}:{number}: each line needs 'question' and 'answer'")
                rows.append({"question": row["question"], "answer": str(row["answer"])})
    return rows[:limit] if limit else rows


def ask_one(
    url: str, protocol: str, run: Run, index: int, row: dict, seed: int, max_tokens: int | None
) -> Record:
    params = dict(run.params)
    if max_tokens is not None:
        params.setdefault("max_tokens", max_tokens)
    started = time.perf_counter()
    try:
        with ScaffoldingClient(url, protocol) as client:
            result = client.ask(row["question"], run.method, params, seed=seed + index)
    except ScaffoldingError as error:
        return Record(False, 0, 0, time.perf_counter() - started, str(error))
    latency = time.perf_counter() - started
    predicted = parse_reference(result.answer) if result.answer else None
    return Record(
        correct=answers_equal(predicted, parse_reference(row["answer"])),
        output_tokens=int(result.account.get("output_tokens", 0)),
        sub_requests=int(result.account.get("sub_requests", 0)),
        latency_s=latency,
    )


def summarize(run: Run, records: list[Record]) -> Summary:
    correct = sum(r.correct for r in records)
    latencies = [r.latency_s for r in records]
    errors = [r.error for r in records if r.error]
    return Summary(
        label=run.label,
        method=run.method,
        budget=run.budget,
        params=run.params,
        questions=len(records),
        accuracy=correct / len(records),
        ci95=wilson_interval(correct, len(records)),
        mean_output_tokens=float(np.mean([r.output_tokens for r in records])),
        mean_sub_requests=float(np.mean([r.sub_requests for r in records])),
        p50_latency_s=float(np.percentile(latencies, 50)),
        p95_latency_s=float(np.percentile(latencies, 95)),
        errors=len(errors),
        first_error=errors[0] if errors else None,
        correct=[r.correct for r in records],
    )


def evaluate(
    url: str,
    protocol: str,
    runs: list[Run],
    rows: list[dict],
    *,
    concurrency: int,
    seed: int,
    max_tokens: int | None,
) -> list[Summary]:
    records: dict[int, list[Record | None]] = {i: [None] * len(rows) for i in range(len(runs))}
    with (
        ThreadPoolExecutor(concurrency) as pool,
        tqdm(total=len(runs) * len(rows), desc="evaluating", unit="req", file=sys.stderr) as bar,
    ):
        futures = {
            pool.submit(ask_one, url, protocol, run, index, row, seed, max_tokens): (r, index)
            for r, run in enumerate(runs)
            for index, row in enumerate(rows)
        }
        for done, future in enumerate(as_completed(futures), start=1):
            r, index = futures[future]
            record = records[r][index] = future.result()
            bar.update(1)
            if record.error and not _server_ready(url, protocol):
                for pending in futures:
                    pending.cancel()
                raise ServerGone(
                    f"the server at {url} stopped answering after {done} of {len(futures)} "
                    f"requests (last error: {record.error}); nothing was written"
                )
    return [summarize(run, records[r]) for r, run in enumerate(runs)]


class ServerGone(RuntimeError):
    """The server stopped answering part-way: the numbers would count its absence as
    wrong answers."""


def _server_ready(url: str, protocol: str) -> bool:
    with ScaffoldingClient(url, protocol) as client:
        return client.is_ready()


def print_table(summaries: list[Summary], console: Console) -> None:
    table = Table(title=f"scaffolding-eval ({summaries[0].questions} questions)")
    for column, justify in [
        ("method", "left"),
        ("accuracy", "right"),
        ("95% CI", "right"),
        ("gen. tokens", "right"),
        ("sub-requests", "right"),
        ("p50 s", "right"),
        ("p95 s", "right"),
        ("errors", "right"),
    ]:
        table.add_column(column, justify=justify)
    for s in summaries:
        table.add_row(
            s.label,
            f"{100 * s.accuracy:.1f}%",
            f"{100 * s.ci95[0]:.1f}-{100 * s.ci95[1]:.1f}",
            f"{s.mean_output_tokens:.0f}",
            f"{s.mean_sub_requests:.1f}",
            f"{s.p50_latency_s:.2f}",
            f"{s.p95_latency_s:.2f}",
            str(s.errors),
        )
    console.print(table)
    for s in summaries:
        if s.first_error:
            console.print(
                f"[yellow]{s.label}: {s.errors} failed requests, e.g.: {s.first_error}[/yellow]"
            )


def plot(summaries: list[Summary], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5))
    by_method: dict[str, list[Summary]] = {}
    for s in summaries:
        key = s.label.rsplit("@", 1)[0] if s.budget is not None else s.label
        by_method.setdefault(key, []).append(s)
    for label, points in by_method.items():
        points.sort(key=lambda s: s.mean_output_tokens)
        x = [max(1.0, s.mean_output_tokens) for s in points]
        y = [100 * s.accuracy for s in points]
        if len(points) > 1:
            axes.plot(x, y, marker="o", label=label)
            for s, xi, yi in zip(points, x, y):
                axes.annotate(
                    str(s.budget), (xi, yi), textcoords="offset points", xytext=(3, 3), fontsize=7
                )
        else:
            axes.scatter(x, y, marker="x", label=label)
    axes.set_xscale("log")
    axes.set_xlabel("mean generated tokens per question (log)")
    axes.set_ylabel("accuracy (%)")
    axes.set_title(
        f"accuracy vs generated tokens ({summaries[0].questions} questions; labels: budget)"
    )
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scaffolding-eval",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--limit", type=int, help="only the first N questions")
    parser.add_argument(
        "--methods", nargs="+", default=list(ALL_METHODS), metavar="METHOD[:k=v,...]"
    )
    parser.add_argument("--budgets", nargs="+", type=int, default=list(DEFAULT_BUDGETS))
    parser.add_argument(
        "--preset",
        choices=["model-card"],
        help="a fixed list of configurations instead of --methods/--budgets",
    )
    parser.add_argument("--url", help="gRPC address of a running server (default: start one)")
    parser.add_argument(
        "--generator-dir",
        help="the server it starts serves this model directory as the generator "
        "(for example models/reasoner; default: the shipped models/generator)",
    )
    parser.add_argument("--protocol", choices=["grpc", "http"], default="grpc")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--seed", type=int, default=0, help="question i is asked with seed SEED + i"
    )
    parser.add_argument(
        "--max-tokens",
        type=int,
        default=None,
        help="max_tokens for every generation (default: each method's)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO_ROOT / "runs" / "eval",
        help="directory for results.json and the plot",
    )
    args = parser.parse_args(argv)
    if args.url and args.generator_dir:
        parser.error("--generator-dir applies to the server scaffolding-eval starts, not to --url")
    rows = load_dataset(args.dataset, args.limit)
    if args.preset == "model-card":
        runs = [Run(label, method, params) for label, method, params in MODEL_CARD]
    else:
        runs = plan_runs(args.methods, args.budgets)
    server = None
    if args.url is None:
        from scaffolding_backend.server import TritonServer

        print("starting a tritonserver for the evaluation ...", file=sys.stderr, flush=True)
        args.out.mkdir(parents=True, exist_ok=True)
        TritonServer.exit_on_sigterm()
        server = TritonServer(
            log_file=args.out / "tritonserver.log", generator_dir=args.generator_dir
        ).start()
        args.url = server.grpc_url if args.protocol == "grpc" else server.http_url
    elif not _server_ready(args.url, args.protocol):
        raise SystemExit(
            f"scaffolding-eval: no ready Triton server answers {args.protocol} at {args.url}"
        )
    started = time.perf_counter()
    try:
        summaries = evaluate(
            args.url,
            args.protocol,
            runs,
            rows,
            concurrency=args.concurrency,
            seed=args.seed,
            max_tokens=args.max_tokens,
        )
    except ServerGone as gone:
        raise SystemExit(f"scaffolding-eval: {gone}") from None
    finally:
        if server is not None:
            server.stop()
    elapsed = time.perf_counter() - started
    # a pipe or a log gets full rows rather than rich's 80-column default
    print_table(summaries, Console(width=shutil.get_terminal_size((160, 24)).columns))
    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "dataset": str(args.dataset),
        "questions": len(rows),
        "seed": args.seed,
        "wall_seconds": round(elapsed, 1),
        "runs": [asdict(s) for s in summaries],
    }
    (args.out / "results.json").write_text(json.dumps(result, indent=2))
    plot(summaries, args.out / "accuracy_vs_tokens.png")
    print(
        f"wrote {args.out / 'results.json'} and {args.out / 'accuracy_vs_tokens.png'} "
        f"({elapsed:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
