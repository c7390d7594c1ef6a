"""``scaffolding-bench load``: throughput and tail latency of majority_vote under load,
voted by the server against the same vote done by the client.

    scaffolding-bench load                                # closed 1,4 and open 2/s, 8 s each
    scaffolding-bench load --concurrency 1,2,4,8 --duration 15
    scaffolding-bench load --rate 1,2,3 --json runs/load.json --plot runs/load.png

Two load strategies:

* closed loop (``--concurrency``): C requests in flight, each one that finishes replaced
  at once; ``--warmup`` seconds are not counted, then the requests that finish within the
  next ``--duration`` seconds are.
* open loop (``--rate``): Poisson arrivals (seeded exponential gaps) for ``--duration``
  seconds, each request started on schedule whether or not earlier ones have finished.
  The ones still in flight at the end are awaited and counted (``after window``), and the
  rates are over the time until the last one finished; a request the client started more
  than 0.1 s behind its schedule counts as ``late``.

Two sides at every level, one after the other (the side that goes first alternates), over
the same questions (data/test.jsonl in turn) with the same seeds:

* server: the decoupled ``scaffolding`` model runs majority_vote with ``--samples``
  samples; one request per question over one persistent asyncio gRPC channel.
* client: the strongest baseline a user would write: the same client sends the same
  generator requests itself (the server's prompt and sample seeds, so the same texts)
  over one persistent asyncio gRPC channel, all in flight together, and votes with the
  server's own ``tally``.

Per side and level it reports answered requests, errors, requests/s, generations/s (the
server's from its account), output tokens/s, p50/p90/p99 latency, goodput (requests/s
answered within ``--slo-s``) and how often both sides chose the same answer: a table on
stdout, everything with the raw latencies in ``--json``, and throughput and p99 latency
against offered load in ``--plot``. Starts its own server unless ``--grpc-url`` is given.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import tritonclient.grpc as grpc
import tritonclient.grpc.aio as aio
from grpc import RpcError
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from tritonclient.utils import InferenceServerException

from scaffolding_backend.kernel import PromptFormat

from .api import STREAMING_MODEL, request_inputs, result_of
from .benchmark import AsyncGenerator, add_common_arguments, serving
from .evaluate import DEFAULT_DATASET, load_dataset

GENERATOR_MODEL = "generator"
METHOD = "majority_vote"
# a request the client could not start within this long of its schedule is "late": the
# client, not the server, was the bottleneck for it
LATE_START_S = 0.1
PERCENTILES = (50, 90, 99)
# warm-up requests get seeds far from the measured ones
WARMUP_SEED_OFFSET = 1_000_000


class ServerUnreachable(RuntimeError):
    """No Triton server answers at the URL, or it lacks a model the benchmark needs."""


@dataclass(frozen=True)
class Settings:
    samples: int
    max_tokens: int
    temperature: float
    seed: int
    slo_s: float
    duration_s: float
    warmup_s: float
    timeout_s: float


@dataclass(frozen=True)
class Work:
    """One question to answer; both sides get the same question and seed for an index."""

    index: int
    question: str
    seed: int


class Workload:
    def __init__(self, questions: Sequence[str], seed: int):
        if not questions:
            raise ValueError("no questions to ask")
        self.questions = list(questions)
        self.seed = seed

    def item(self, index: int) -> Work:
        return Work(index, self.questions[index % len(self.questions)], self.seed + index)

    def warmup_item(self, index: int) -> Work:
        return Work(
            -1 - index,
            self.questions[index % len(self.questions)],
            self.seed + WARMUP_SEED_OFFSET + index,
        )


@dataclass(frozen=True)
class Answered:
    answer: str | None
    generations: int
    output_tokens: int


@dataclass
class Outcome:
    """One request as the client saw it (times from time.perf_counter)."""

    work: int
    started: float
    finished: float
    answer: str | None = None
    generations: int = 0
    output_tokens: int = 0
    error: str | None = None
    scheduled: float | None = None  # open loop: when it was due

    @property
    def latency_s(self) -> float:
        return self.finished - self.started


class Side(Protocol):
    name: str

    async def answer(self, work: Work) -> Answered: ...


class ServerVote:
    """majority_vote inside the server: one ``scaffolding`` request per question."""

    name = "server"

    def __init__(self, client: aio.InferenceServerClient, settings: Settings):
        self.client = client
        self.settings = settings
        self.params = {
            "samples": settings.samples,
            "max_tokens": settings.max_tokens,
            "temperature": settings.temperature,
        }

    async def answer(self, work: Work) -> Answered:
        inputs = request_inputs(grpc, work.question, METHOD, self.params, work.seed, None, False)

        async def request():
            yield {"model_name": STREAMING_MODEL, "inputs": inputs}

        answered = None
        responses = self.client.stream_infer(request())
        try:
            # read on until the server ends the stream (right after the final response):
            # cancelling a stream whose request has just answered leaves the scaffolding
            # model unable to unload (Triton 2.51)
            async for result, error in responses:
                if error is not None:
                    raise error
                if result.as_numpy("account") is None:  # a response with the final flag alone
                    continue
                reply = result_of(result, [])
                answered = Answered(
                    answer=reply.answer,
                    generations=generations_in(reply.account, self.settings.samples),
                    output_tokens=int(reply.account.get("output_tokens", 0)),
                )
        finally:
            if answered is None:  # an error or a timeout: the server stops the sub-requests
                responses.cancel()
        if answered is None:
            raise InferenceServerException("the scaffolding stream ended without an answer")
        return answered


def generations_in(account: dict[str, Any], default: int) -> int:
    """The generator requests the server's account says it sent (``default`` where the
    account does not say)."""
    by_model = account.get("sub_requests_by_model")
    if isinstance(by_model, dict) and "generation" in by_model:
        return int(by_model["generation"])
    return int(account.get("sub_requests", default))


class ClientVote:
    """majority_vote in the client: the same generator requests, voted with ``tally``."""

    name = "client"

    def __init__(self, client: aio.InferenceServerClient, settings: Settings):
        self.generator = AsyncGenerator(client, GENERATOR_MODEL)
        self.settings = settings
        self.prompt_format = PromptFormat()

    async def answer(self, work: Work) -> Answered:
        s = self.settings
        answer, generations = await self.generator.vote(
            self.prompt_format.prompt(work.question),
            s.max_tokens,
            s.temperature,
            work.seed,
            s.samples,
        )
        return Answered(answer, len(generations), sum(g.output_tokens for g in generations))


async def attempt(side: Side, work: Work, timeout_s: float) -> Outcome:
    """One request; the server's errors and timeouts are counted, not raised."""
    started = time.perf_counter()
    try:
        answered = await asyncio.wait_for(side.answer(work), timeout_s)
    except asyncio.TimeoutError:
        return Outcome(work.index, started, time.perf_counter(), error=f"timeout ({timeout_s} s)")
    except (InferenceServerException, RpcError) as error:
        message = error.message() if isinstance(error, InferenceServerException) else None
        return Outcome(work.index, started, time.perf_counter(), error=message or str(error))
    return Outcome(work.index, started, time.perf_counter(), **asdict(answered))


@dataclass
class Run:
    """One side at one load level: the counted outcomes and the time they are counted over."""

    outcomes: list[Outcome]
    window_s: float
    offered: int | None = None  # open loop: the arrivals scheduled
    ended_at: float = 0.0  # open loop: when the window ended, to find who finished after it


async def closed_loop(
    side: Side,
    workload: Workload,
    concurrency: int,
    settings: Settings,
    on_outcome: Callable[[Outcome], None],
) -> Run:
    started = time.perf_counter()
    window_start = started + settings.warmup_s
    window_end = window_start + settings.duration_s
    indices = itertools.count()
    counted: list[Outcome] = []

    async def keep_one_in_flight() -> None:
        while time.perf_counter() < window_end:
            outcome = await attempt(side, workload.item(next(indices)), settings.timeout_s)
            # steady state only: neither the warm-up nor the requests cut by the window's end
            if window_start <= outcome.finished <= window_end:
                counted.append(outcome)
                on_outcome(outcome)

    await asyncio.gather(*(keep_one_in_flight() for _ in range(concurrency)))
    return Run(counted, settings.duration_s)


def poisson_arrivals(rate: float, duration_s: float, seed: int) -> list[float]:
    """Arrival times in [0, duration_s) with exponential gaps of mean 1/rate; seeded, so both
    sides (and every rerun) get the same schedule."""
    rng = np.random.default_rng(seed)
    arrivals: list[float] = []
    at = float(rng.exponential(1.0 / rate))
    while at < duration_s:
        arrivals.append(at)
        at += float(rng.exponential(1.0 / rate))
    return arrivals


async def open_loop(
    side: Side,
    workload: Workload,
    rate: float,
    settings: Settings,
    on_outcome: Callable[[Outcome], None],
) -> Run:
    arrivals = poisson_arrivals(rate, settings.duration_s, settings.seed)
    origin = time.perf_counter()

    async def arrive(index: int, due_s: float) -> Outcome:
        await asyncio.sleep(max(0.0, origin + due_s - time.perf_counter()))
        outcome = await attempt(side, workload.item(index), settings.timeout_s)
        outcome.scheduled = origin + due_s
        on_outcome(outcome)
        return outcome

    outcomes = await asyncio.gather(*(arrive(i, due) for i, due in enumerate(arrivals)))
    last = max((outcome.finished for outcome in outcomes), default=origin)
    # past saturation the queue drains after the window: counting over the time until the
    # last answer makes requests/s the rate actually served
    window_s = max(settings.duration_s, last - origin)
    return Run(list(outcomes), window_s, len(arrivals), origin + settings.duration_s)


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


def summarize(run: Run, settings: Settings) -> dict[str, Any]:
    answered = [outcome for outcome in run.outcomes if outcome.error is None]
    latencies = np.array(sorted(outcome.latency_s for outcome in answered))
    generations = sum(outcome.generations for outcome in answered)
    per_s = lambda count: _round(count / run.window_s)
    percentiles = (
        np.percentile(latencies, PERCENTILES) if len(latencies) else [None] * len(PERCENTILES)
    )
    summary: dict[str, Any] = {
        "completed": len(answered),
        "errors": len(run.outcomes) - len(answered),
        "error_messages": Counter(
            outcome.error for outcome in run.outcomes if outcome.error is not None
        ).most_common(3),
        "window_s": _round(run.window_s, 3),
        "requests_per_s": per_s(len(answered)),
        "generations_per_s": per_s(generations),
        "generations": generations,
        # the server's account against what was asked: a vote that sent more or fewer
        # generator requests than --samples would show here
        "generations_match_samples": generations == settings.samples * len(answered),
        "output_tokens_per_s": per_s(sum(outcome.output_tokens for outcome in answered)),
        "goodput_per_s": per_s(int((latencies <= settings.slo_s).sum())),
        "latency_s": {
            **{f"p{p}": _round(v) for p, v in zip(PERCENTILES, percentiles)},
            "mean": _round(latencies.mean()) if len(latencies) else None,
            "min": _round(latencies[0]) if len(latencies) else None,
            "max": _round(latencies[-1]) if len(latencies) else None,
        },
        "latencies_s": [_round(v) for v in latencies],
    }
    if run.offered is not None:
        lags = [o.started - o.scheduled for o in run.outcomes if o.scheduled is not None]
        summary["offered"] = run.offered
        summary["late_starts"] = sum(lag > LATE_START_S for lag in lags)
        summary["max_start_lag_s"] = _round(max(lags, default=0.0))
        summary["finished_after_window"] = sum(o.finished > run.ended_at for o in run.outcomes)
    return summary


def agreement(server: Run, client: Run) -> dict[str, int]:
    """How often both sides chose the same answer for the same question and seed."""
    answers = lambda run: {o.work: o.answer for o in run.outcomes if o.error is None}
    server_answers, client_answers = answers(server), answers(client)
    common = server_answers.keys() & client_answers.keys()
    return {
        "compared": len(common),
        "agree": sum(server_answers[index] == client_answers[index] for index in common),
    }


@dataclass
class Level:
    strategy: str  # "closed" or "open"
    load: float  # concurrency or requests/s offered
    runs: dict[str, Run] = field(default_factory=dict)


class SweepProgress:
    """One line per side and level on stderr: a sweep takes minutes."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("{task.description:<22}"),
            BarColumn(),
            TextColumn("{task.fields[done]:>4} answered {task.fields[errors]:>3} errors"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
        )

    def __enter__(self) -> SweepProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    @contextlib.asynccontextmanager
    async def segment(self, label: str, seconds: float) -> AsyncIterator[Callable[[Outcome], None]]:
        task = self.progress.add_task(label, total=seconds, done=0, errors=0)
        counts = Counter[str]()

        def record(outcome: Outcome) -> None:
            counts["errors" if outcome.error else "done"] += 1
            self.progress.update(task, done=counts["done"], errors=counts["errors"])

        async def tick() -> None:
            started = time.perf_counter()
            while True:
                self.progress.update(task, completed=min(seconds, time.perf_counter() - started))
                await asyncio.sleep(0.25)

        ticker = asyncio.create_task(tick())
        try:
            yield record
        finally:
            ticker.cancel()
            self.progress.update(task, completed=seconds)


async def check_reachable(client: aio.InferenceServerClient, url: str) -> None:
    try:
        live = await client.is_server_live(client_timeout=10)
    except InferenceServerException as error:
        raise ServerUnreachable(f"no Triton server answers at {url}: {error.message()}") from None
    if not live:
        raise ServerUnreachable(f"the Triton server at {url} is not live")
    for model in (STREAMING_MODEL, GENERATOR_MODEL):
        if not await client.is_model_ready(model, client_timeout=10):
            raise ServerUnreachable(f"the server at {url} has no ready model {model!r}")


async def sweep(
    url: str,
    settings: Settings,
    workload: Workload,
    plan: list[tuple[str, float]],
    progress: SweepProgress,
) -> tuple[list[Level], str | None]:
    """Every level of ``plan`` on both sides; returns the levels and, if the sweep stopped
    early, why."""
    # one persistent channel per side, each opened once for the whole sweep
    server_channel = aio.InferenceServerClient(url)
    client_channel = aio.InferenceServerClient(url)
    try:
        await check_reachable(server_channel, url)
        sides: list[Side] = [
            ServerVote(server_channel, settings),
            ClientVote(client_channel, settings),
        ]
        # the first requests pay for lazy initialisation on both paths
        for side in sides:
            async with progress.segment(f"warm-up {side.name}", 1) as record:
                for index in range(2):
                    record(await attempt(side, workload.warmup_item(index), settings.timeout_s))
        levels: list[Level] = []
        for number, (strategy, load) in enumerate(plan):
            level = Level(strategy, load)
            levels.append(level)
            # alternate who goes first, so that neither side always runs right after the other
            for side in sides if number % 2 == 0 else sides[::-1]:
                label = f"{strategy} {load:g} {side.name}"
                if strategy == "closed":
                    seconds = settings.warmup_s + settings.duration_s
                    async with progress.segment(label, seconds) as record:
                        run = await closed_loop(side, workload, int(load), settings, record)
                else:
                    async with progress.segment(label, settings.duration_s) as record:
                        run = await open_loop(side, workload, load, settings, record)
                level.runs[side.name] = run
                if run.outcomes and all(outcome.error for outcome in run.outcomes):
                    # A model whose stub died still reports ready (Triton 2.51), so the
                    # server's health says nothing: a level without one answer ends the
                    # sweep instead of waiting out every later request's timeout.
                    first = run.outcomes[0].error
                    return levels, f"every request of {label} failed (first: {first})"
        return levels, None
    finally:
        await server_channel.close()
        await client_channel.close()


def report(levels: list[Level], settings: Settings) -> list[dict[str, Any]]:
    rows = []
    for level in levels:
        # concurrency is a count; a rate may be fractional
        load = int(level.load) if level.strategy == "closed" else level.load
        row: dict[str, Any] = {"strategy": level.strategy, "load": load}
        row["sides"] = {name: summarize(run, settings) for name, run in level.runs.items()}
        if {"server", "client"} <= level.runs.keys():
            row["agreement"] = agreement(level.runs["server"], level.runs["client"])
        rows.append(row)
    return rows


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def print_tables(rows: list[dict[str, Any]], settings: Settings, console: Console) -> None:
    for strategy, load_name in (("closed", "concurrency"), ("open", "rate (req/s)")):
        selected = [row for row in rows if row["strategy"] == strategy]
        if not selected:
            continue
        table = Table(
            title=f"{strategy} loop: {METHOD}@{settings.samples}, max_tokens "
            f"{settings.max_tokens}, {settings.duration_s:g} s per level, "
            f"goodput = answered within {settings.slo_s:g} s"
        )
        columns = [load_name, "side", "done", "errors"]
        if strategy == "open":
            columns += ["offered", "late", "after window"]
        columns += ["req/s", "gen/s", "out tok/s", "p50 s", "p90 s", "p99 s", "goodput/s"]
        columns += ["agree"]
        for column in columns:
            table.add_column(column, justify="left" if column == "side" else "right")
        for row in selected:
            agree = row.get("agreement")
            for number, (name, side) in enumerate(row["sides"].items()):
                cells = [f"{row['load']:g}" if number == 0 else "", name]
                cells += [str(side["completed"]), str(side["errors"])]
                if strategy == "open":
                    cells += [
                        str(side[key])
                        for key in ("offered", "late_starts", "finished_after_window")
                    ]
                cells += [f"{side[k]:.2f}" for k in ("requests_per_s", "generations_per_s")]
                cells += [f"{side['output_tokens_per_s']:.0f}"]
                cells += [_seconds(side["latency_s"][f"p{p}"]) for p in PERCENTILES]
                cells += [f"{side['goodput_per_s']:.2f}"]
                cells += [f"{agree['agree']}/{agree['compared']}" if agree and number == 0 else ""]
                table.add_row(*cells)
        console.print(table)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    strategies = [s for s in ("closed", "open") if any(r["strategy"] == s for r in rows)]
    figure, axes = plt.subplots(
        len(strategies), 2, figsize=(10, 4 * len(strategies)), squeeze=False
    )
    for line, strategy in zip(axes, strategies):
        selected = [row for row in rows if row["strategy"] == strategy]
        offered = (
            "concurrency (requests in flight)" if strategy == "closed" else "requests/s offered"
        )
        for name, style in (("server", "o-"), ("client", "s--")):
            points = [(row["load"], row["sides"][name]) for row in selected if name in row["sides"]]
            loads = [load for load, _ in points]
            line[0].plot(loads, [s["generations_per_s"] for _, s in points], style, label=name)
            p99 = [s["latency_s"]["p99"] for _, s in points]
            line[1].plot(loads, [np.nan if v is None else v for v in p99], style, label=name)
            for axis in line:
                axis.set_xticks(loads)
        line[0].set(xlabel=offered, ylabel="generations/s", title=f"{strategy} loop: throughput")
        line[1].set(xlabel=offered, ylabel="p99 latency (s)", title=f"{strategy} loop: p99 latency")
        for axis in line:
            axis.grid(alpha=0.3)
            axis.legend()
            axis.set_ylim(bottom=0)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _numbers(kind: Callable[[str], float]) -> Callable[[str], list[float]]:
    def parse(text: str) -> list[float]:
        try:
            values = [kind(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated numbers, got {text!r}"
            ) from None
        if not values or any(value <= 0 for value in values):
            raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
        return values

    return parse


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scaffolding-bench load",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Without --concurrency and --rate: --concurrency 1,4 --rate 2.",
    )
    add_common_arguments(parser)
    parser.add_argument(
        "--concurrency", type=_numbers(int), help="closed loop: requests in flight, e.g. 1,2,4,8"
    )
    parser.add_argument("--rate", type=_numbers(float), help="open loop: requests/s, e.g. 1,2,3")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds counted per level")
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="closed loop: seconds not counted per level"
    )
    parser.add_argument("--samples", type=int, default=8, help="majority_vote samples")
    parser.add_argument(
        "--seed",
        type=int,
        default=1,
        help="the first question's seed (the next one's is seed+1, ...) and the arrivals'",
    )
    parser.add_argument("--slo-s", type=float, default=2.0, help="goodput's latency objective")
    parser.add_argument("--timeout-s", type=float, default=60.0, help="a request's time limit")
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET, help="JSONL questions")
    parser.add_argument("--plot", type=Path, help="write throughput and p99 against load here")
    args = parser.parse_args(argv)
    if args.concurrency is None and args.rate is None:
        args.concurrency, args.rate = [1, 4], [2.0]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    settings = Settings(
        samples=args.samples,
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        seed=args.seed,
        slo_s=args.slo_s,
        duration_s=args.duration,
        warmup_s=args.warmup,
        timeout_s=args.timeout_s,
    )
    plan = [("closed", float(c)) for c in args.concurrency or []]
    plan += [("open", rate) for rate in args.rate or []]
    workload = Workload([row["question"] for row in load_dataset(args.dataset, None)], args.seed)
    try:
        with serving(args) as target, SweepProgress() as progress:
            url = target.grpc_url
            levels, stopped = asyncio.run(sweep(url, settings, workload, plan, progress))
    except ServerUnreachable as error:
        print(f"scaffolding-bench load: {error}", file=sys.stderr)
        return 2
    rows = report(levels, settings)
    # rich folds a table to 80 columns when stdout is not a terminal; a file or a pipe
    # gets every column whole
    print_tables(rows, settings, Console(width=None if sys.stdout.isatty() else 160))
    if args.json:
        result = {
            "settings": {**asdict(settings), "method": METHOD, "grpc_url": url, "plan": plan},
            "levels": rows,
            "stopped": stopped,
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
    if args.plot:
        plot(rows, args.plot)
    if stopped:
        print(f"scaffolding-bench load: {stopped}", file=sys.stderr)
        return 1
    return 0
