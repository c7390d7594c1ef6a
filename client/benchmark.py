"""``scaffolding-bench``: latency ratios of the scaffolding fan-out, measured in one run.

* fan-out:  majority_vote with 16 samples / one direct generator request (same max_tokens)
* overhead: majority_vote with 8 samples / a client that sends the same 8 generator
            requests concurrently itself (same seeds, so the same texts) and votes
* batching: 8 concurrent generator requests / 8 sequential ones

``scaffolding-bench load`` measures throughput and tail latency under load instead
(client/load.py), and ``scaffolding-bench bls`` what the BLS path itself costs (client/bls.py).

Starts its own server unless --grpc-url is given. Ratios, not absolute times, are
the result: the machine is shared and noisy, and each ratio's two sides run
interleaved in the same process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpc
import tritonclient.grpc.aio as aio
from rich.console import Console
from rich.table import Table
from tritonclient.utils import InferenceServerException

from scaffolding_backend.kernel import Candidate, PromptFormat, derive_seed
from scaffolding_backend.reasoning import extract_answer, tally

from .api import ScaffoldingClient

# the first test question: the shipped models know numbers up to about 30
QUESTION = (
    "Yuki starts with 23 buttons. She loses 13 buttons. She uses 6 buttons. "
    "How many buttons does Yuki have now?"
)
DEFAULT_MAX_TOKENS = 128
DEFAULT_TEMPERATURE = 0.8


def _tensor(name, value, dtype):
    tensor = grpc.InferInput(name, list(value.shape), dtype)
    tensor.set_data_from_numpy(value)
    return tensor


@dataclass(frozen=True)
class Generation:
    text: str
    output_tokens: int


def sample_seeds(seed: int, samples: int) -> list[int]:
    """The seeds the server's majority_vote gives its samples: a client that sends these
    gets the same texts, so the two sides vote over the same candidates."""
    return [derive_seed(seed, (), index) for index in range(samples)]


def majority_answer(texts: list[str]) -> str | None:
    """The client's vote, with the library the server votes with."""
    winner = tally([Candidate(text=t, answer=extract_answer(t)) for t in texts]).winner()
    return winner.answer.text if winner else None


class AsyncGenerator:
    """The generator model called straight from the client: the strongest baseline a user
    would write, one persistent asyncio gRPC channel with every request in flight together
    (the generator is decoupled, as TensorRT-LLM is in decoupled mode). Each call opens one
    stream on that channel and sends all its requests on it."""

    def __init__(self, client: aio.InferenceServerClient, model: str = "generator"):
        self.client = client
        self.model = model
        # The generator keys running requests by request id across streams (that is how a
        # stop request finds its target): ids unique to this client keep calls apart.
        self._calls = itertools.count()

    @staticmethod
    def _inputs(prompt: str, max_tokens: int, temperature: float, seed: int) -> list:
        return [
            _tensor("text_input", np.array([[prompt]], dtype=np.object_), "BYTES"),
            _tensor("max_tokens", np.array([[max_tokens]], dtype=np.int32), "INT32"),
            _tensor("temperature", np.array([[temperature]], dtype=np.float32), "FP32"),
            _tensor("seed", np.array([[seed]], dtype=np.uint64), "UINT64"),
            _tensor("exclude_input_in_output", np.array([[True]]), "BOOL"),
        ]

    async def generate(
        self, prompt: str, max_tokens: int, temperature: float, seeds: list[int]
    ) -> list[Generation]:
        """One generation per seed, all in flight together; raises the server's error."""
        call = f"{id(self):x}-{next(self._calls)}"
        ids = [f"{call}-{index}" for index in range(len(seeds))]

        async def requests():
            for request_id, seed in zip(ids, seeds):
                inputs = self._inputs(prompt, max_tokens, temperature, seed)
                yield {"model_name": self.model, "inputs": inputs, "request_id": request_id}

        generations: dict[str, Generation] = {}
        responses = self.client.stream_infer(requests())
        try:
            # read on until the server ends the stream, right after the last final response:
            # cancelling a stream whose requests have just answered can leave a model unable
            # to unload (seen with the scaffolding model on Triton 2.51)
            async for result, error in responses:
                if error is not None:
                    raise error
                text = result.as_numpy("text_output")
                if text is None:  # a response that only carries the final flag
                    continue
                tokens = result.as_numpy("num_output_tokens")
                generations[result.get_response().id] = Generation(
                    text=text.reshape(-1)[0].decode(),
                    output_tokens=int(tokens.reshape(-1)[0]) if tokens is not None else 0,
                )
        finally:
            if len(generations) < len(seeds):  # leaving early: the server stops the rest
                responses.cancel()
        if len(generations) < len(seeds):
            raise InferenceServerException(
                f"the generator's stream ended after {len(generations)} of {len(seeds)} responses"
            )
        return [generations[request_id] for request_id in ids]

    async def vote(
        self, prompt: str, max_tokens: int, temperature: float, seed: int, samples: int
    ) -> tuple[str | None, list[Generation]]:
        """majority_vote done by the client: the server's sample seeds, then ``tally``."""
        generations = await self.generate(
            prompt, max_tokens, temperature, sample_seeds(seed, samples)
        )
        return majority_answer([g.text for g in generations]), generations


class DirectGenerator:
    """AsyncGenerator for callers without an event loop (the latency measurements)."""

    def __init__(self, url: str, model: str = "generator"):
        self.loop = asyncio.new_event_loop()
        self.client = self.loop.run_until_complete(self._connect(url))
        self.generator = AsyncGenerator(self.client, model)

    @staticmethod
    async def _connect(url: str) -> aio.InferenceServerClient:
        return aio.InferenceServerClient(url)

    def generate(self, prompt: str, max_tokens: int, temperature: float, seed: int) -> str:
        return self.concurrent(prompt, max_tokens, temperature, [seed])[0]

    def concurrent(
        self, prompt: str, max_tokens: int, temperature: float, seeds: list[int]
    ) -> list[str]:
        generations = self.loop.run_until_complete(
            self.generator.generate(prompt, max_tokens, temperature, seeds)
        )
        return [generation.text for generation in generations]

    def vote(
        self, prompt: str, max_tokens: int, temperature: float, seed: int, samples: int
    ) -> str | None:
        return self.loop.run_until_complete(
            self.generator.vote(prompt, max_tokens, temperature, seed, samples)
        )[0]

    def close(self) -> None:
        self.loop.run_until_complete(self.client.close())
        self.loop.close()


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def measure(
    grpc_url: str, *, repeats: int, max_tokens: int, temperature: float, question: str
) -> dict:
    prompt = PromptFormat().prompt(question)
    direct = DirectGenerator(grpc_url)
    scaffolding = ScaffoldingClient(grpc_url, "grpc")
    params = lambda n: {"samples": n, "max_tokens": max_tokens, "temperature": temperature}
    samples: dict[str, list[float]] = {
        k: [] for k in ("single", "mv16", "mv8", "client8", "batch8", "seq8")
    }
    agreement = 0

    def client_side_vote(seed: int) -> str | None:
        return direct.vote(prompt, max_tokens, temperature, seed, samples=8)

    # warm-up: first requests pay for lazy initialisation on both paths
    scaffolding.ask(question, "majority_vote", params(8), seed=10_000)
    client_side_vote(10_000)
    for repeat in range(repeats):
        seed = 1 + repeat
        seeds = sample_seeds(seed, 8)
        samples["single"].append(
            timed(lambda: direct.generate(prompt, max_tokens, temperature, seeds[0]))
        )
        samples["mv16"].append(
            timed(lambda: scaffolding.ask(question, "majority_vote", params(16), seed=seed))
        )
        server_answer: dict[str, str | None] = {}
        samples["mv8"].append(
            timed(
                lambda: server_answer.setdefault(
                    "a", scaffolding.ask(question, "majority_vote", params(8), seed=seed).answer
                )
            )
        )
        client_answer: dict[str, str | None] = {}
        samples["client8"].append(
            timed(lambda: client_answer.setdefault("a", client_side_vote(seed)))
        )
        agreement += server_answer["a"] == client_answer["a"]
        samples["batch8"].append(
            timed(lambda: direct.concurrent(prompt, max_tokens, temperature, seeds))
        )
        samples["seq8"].append(
            timed(lambda: [direct.generate(prompt, max_tokens, temperature, s) for s in seeds])
        )
        print(f"  repeat {repeat + 1}/{repeats} done", file=sys.stderr, flush=True)
    scaffolding.close()
    direct.close()
    medians = {k: statistics.median(v) for k, v in samples.items()}
    return {
        "repeats": repeats,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "median_seconds": {k: round(v, 4) for k, v in medians.items()},
        "fan_out_ratio_mv16_over_single": round(medians["mv16"] / medians["single"], 3),
        "overhead_ratio_mv8_over_client8": round(medians["mv8"] / medians["client8"], 3),
        "batching_ratio_concurrent8_over_sequential8": round(
            medians["batch8"] / medians["seq8"], 3
        ),
        "server_and_client_votes_agree": f"{agreement}/{repeats}",
    }


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """What every scaffolding-bench measurement takes: the server and the sampling knobs."""
    parser.add_argument("--grpc-url", help="a running server (default: start one on free ports)")
    parser.add_argument(
        "--max-tokens", type=int, default=DEFAULT_MAX_TOKENS, help="per generation (default 128)"
    )
    parser.add_argument(
        "--temperature", type=float, default=DEFAULT_TEMPERATURE, help="sampling (default 0.8)"
    )
    parser.add_argument(
        "--model-repository", help="when starting a server: serve this model repository"
    )
    parser.add_argument(
        "--generator-dir", help="when starting a server: serve this generator directory"
    )
    parser.add_argument("--json", help="also write the numbers to this file")


# Triton's error and warning lines, and the line a crash (or a stop) begins with
TRITON_PROBLEM = re.compile(r"[EW]\d{4} |Signal \(\d+\) received")
# what a CPU-only machine logs at every start
NO_GPU_NOISE = (
    "DCGM unable to start",
    "CudaDriverHelper has not been initialized",
    "Unable to allocate pinned system memory",
)


@dataclass(frozen=True)
class Serving:
    """The server a measurement talks to: its gRPC URL, the gRPC metadata that opens its
    restricted APIs (perf_analyzer reads statistics), and, for a server started here, what
    CPU time its processes have spent."""

    grpc_url: str
    admin_grpc_headers: dict[str, str]
    cpu_seconds: Callable[[], dict[str, float]] | None = None
    server_log: Callable[[], str] | None = None  # what the server wrote since its start

    def logged_problems(self, lines: int = 12) -> str:
        """The last error and warning lines of a server started here, to explain a failure."""
        if self.server_log is None:
            return ""
        # a stub's log lines reach the server through a queue of their own, after the
        # responses that the failure was seen in
        time.sleep(1.0)
        problems = [
            line
            for line in self.server_log().splitlines()
            if TRITON_PROBLEM.match(line) and not any(noise in line for noise in NO_GPU_NOISE)
        ]
        if not problems:
            return ""
        return "\nthe server's log says:\n" + "\n".join(problems[-lines:])


@contextlib.contextmanager
def serving(
    args: argparse.Namespace,
    generator_overrides: dict[str, object] | None = None,
    scaffolding_overrides: dict[str, object] | None = None,
    extra_repositories: Sequence[Path] = (),
) -> Iterator[Serving]:
    """The server to measure: ``--grpc-url`` (its admin key from SCAFFOLDING_ADMIN_KEY), or a
    server started for the measurement, its generator with ``generator_overrides``, its
    scaffolding models with ``scaffolding_overrides`` and the models of
    ``extra_repositories`` loaded too, and stopped after it (also on Ctrl-C and SIGTERM)."""
    from scaffolding_backend.server import (
        ADMIN_HEADER,
        ADMIN_KEY_ENV,
        DEFAULT_MODEL_REPOSITORY,
        REPO_ROOT,
        TritonServer,
    )

    if args.grpc_url is not None:
        key = os.environ.get(ADMIN_KEY_ENV)
        headers = {f"triton-grpc-protocol-{ADMIN_HEADER}": key} if key else {}
        yield Serving(args.grpc_url, headers)
        return
    # a stub that dies part-way says why only in the server's log
    log_file = REPO_ROOT / "runs" / "scaffolding-bench-tritonserver.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    print(
        f"starting a tritonserver for the benchmark (log: {log_file}) ...",
        file=sys.stderr,
        flush=True,
    )
    TritonServer.exit_on_sigterm()
    server = TritonServer(
        args.model_repository or DEFAULT_MODEL_REPOSITORY,
        generator_dir=args.generator_dir,
        log_file=log_file,
        generator_overrides=generator_overrides,
        scaffolding_overrides=scaffolding_overrides,
        extra_args=[f"--model-repository={path}" for path in extra_repositories],
    ).start()
    try:
        yield Serving(
            server.grpc_url,
            server.admin_grpc_headers,
            server.cpu_seconds,
            server.logged_since_start,
        )
    finally:
        server.stop()


def latency_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="scaffolding-bench [latency]",
        description=__doc__.split("\n\n")[0],
        epilog="scaffolding-bench load --help: throughput and tail latency under load",
    )
    add_common_arguments(parser)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--question", default=QUESTION)
    args = parser.parse_args(argv)
    with serving(args) as target:
        result = measure(
            target.grpc_url,
            repeats=args.repeats,
            max_tokens=args.max_tokens,
            temperature=args.temperature,
            question=args.question,
        )
    table = Table(
        title=f"scaffolding-bench (median of {args.repeats}, max_tokens={args.max_tokens})"
    )
    table.add_column("measurement")
    table.add_column("value", justify="right")
    for key, value in result["median_seconds"].items():
        table.add_row(f"median {key} (s)", f"{value:.3f}")
    for key in (
        "fan_out_ratio_mv16_over_single",
        "overhead_ratio_mv8_over_client8",
        "batching_ratio_concurrent8_over_sequential8",
        "server_and_client_votes_agree",
    ):
        table.add_row(key, str(result[key]))
    Console().print(table)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``scaffolding-bench [latency] ...`` (the default), ``scaffolding-bench load ...`` or
    ``scaffolding-bench bls ...``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["load"]:
        from .load import main as load_main  # load.py builds on this module's pieces

        return load_main(argv[1:])
    if argv[:1] == ["bls"]:
        from .bls import main as bls_main

        return bls_main(argv[1:])
    if argv[:1] == ["latency"]:
        argv = argv[1:]
    return latency_main(argv)


if __name__ == "__main__":
    sys.exit(main())
