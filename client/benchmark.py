"""``scaffolding-bench``: latency ratios of the scaffolding fan-out, measured in one run.

* fan-out:  majority_vote with 16 samples / one direct generator request (same max_tokens)
* overhead: majority_vote with 8 samples / a client that sends the same 8 generator
            requests concurrently itself (same seeds, so the same texts) and votes
* batching: 8 concurrent generator requests / 8 sequential ones

Starts its own server unless --grpc-url is given. Ratios, not absolute times, are
the result: the machine is shared and noisy, and each ratio's two sides run
interleaved in the same process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time

import numpy as np
import tritonclient.grpc as grpc
import tritonclient.grpc.aio as aio
from rich.console import Console
from rich.table import Table

from scaffolding_backend.kernel import Candidate, PromptFormat, derive_seed
from scaffolding_backend.reasoning import extract_answer, tally

from .api import ScaffoldingClient

QUESTION = (
    "Tom has 23 apples and buys 48 more. Then he gives away 17 apples. "
    "How many apples does Tom have now?"
)


def _tensor(name, value, dtype):
    tensor = grpc.InferInput(name, list(value.shape), dtype)
    tensor.set_data_from_numpy(value)
    return tensor


class DirectGenerator:
    """The generator model called straight from the client: the strongest baseline a user
    would write, one persistent asyncio gRPC stream with every request in flight together
    (the generator is decoupled, as TensorRT-LLM is in decoupled mode)."""

    def __init__(self, url: str, model: str = "generator"):
        self.model = model
        self.loop = asyncio.new_event_loop()
        self.client = self.loop.run_until_complete(self._connect(url))

    @staticmethod
    async def _connect(url: str) -> aio.InferenceServerClient:
        return aio.InferenceServerClient(url)

    def _inputs(self, prompt: str, max_tokens: int, temperature: float, seed: int) -> list:
        return [
            _tensor("text_input", np.array([[prompt]], dtype=np.object_), "BYTES"),
            _tensor("max_tokens", np.array([[max_tokens]], dtype=np.int32), "INT32"),
            _tensor("temperature", np.array([[temperature]], dtype=np.float32), "FP32"),
            _tensor("seed", np.array([[seed]], dtype=np.uint64), "UINT64"),
            _tensor("exclude_input_in_output", np.array([[True]]), "BOOL"),
        ]

    async def _many(
        self, prompt: str, max_tokens: int, temperature: float, seeds: list[int]
    ) -> list[str]:
        async def requests():
            for index, seed in enumerate(seeds):
                inputs = self._inputs(prompt, max_tokens, temperature, seed)
                yield {"model_name": self.model, "inputs": inputs, "request_id": str(index)}

        texts: dict[str, str] = {}
        async for result, error in self.client.stream_infer(requests()):
            if error is not None:
                raise error
            texts[result.get_response().id] = result.as_numpy("text_output").reshape(-1)[0].decode()
            if len(texts) == len(seeds):
                break
        return [texts[str(index)] for index in range(len(seeds))]

    def generate(self, prompt: str, max_tokens: int, temperature: float, seed: int) -> str:
        return self.loop.run_until_complete(self._many(prompt, max_tokens, temperature, [seed]))[0]

    def concurrent(
        self, prompt: str, max_tokens: int, temperature: float, seeds: list[int]
    ) -> list[str]:
        return self.loop.run_until_complete(self._many(prompt, max_tokens, temperature, seeds))

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
        seeds = [derive_seed(seed, (), i) for i in range(8)]
        texts = direct.concurrent(prompt, max_tokens, temperature, seeds)
        winner = tally([Candidate(text=t, answer=extract_answer(t)) for t in texts]).winner()
        return winner.answer.text if winner else None

    # warm-up: first requests pay for lazy initialisation on both paths
    scaffolding.ask(question, "majority_vote", params(8), seed=10_000)
    client_side_vote(10_000)
    for repeat in range(repeats):
        seed = 1 + repeat
        seeds = [derive_seed(seed, (), i) for i in range(8)]
        samples["single"].append(
            timed(lambda: direct.generate(prompt, max_tokens, temperature, seeds[0]))
        )
        samples["mv16"].append(
            timed(lambda: scaffolding.ask(question, "majority_vote", params(16), seed=seed))
        )
        server_answer = {}
        samples["mv8"].append(
            timed(
                lambda: server_answer.setdefault(
                    "a", scaffolding.ask(question, "majority_vote", params(8), seed=seed).answer
                )
            )
        )
        client_answer = {}
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scaffolding-bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--grpc-url", help="a running server (default: start one on free ports)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--question", default=QUESTION)
    parser.add_argument(
        "--model-repository", help="when starting a server: serve this model repository"
    )
    parser.add_argument(
        "--generator-dir", help="when starting a server: serve this generator directory"
    )
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args(argv)
    server = None
    if args.grpc_url is None:
        from scaffolding_backend.server import DEFAULT_MODEL_REPOSITORY, TritonServer

        print("starting a tritonserver for the benchmark ...", file=sys.stderr, flush=True)
        TritonServer.exit_on_sigterm()
        server = TritonServer(
            args.model_repository or DEFAULT_MODEL_REPOSITORY, generator_dir=args.generator_dir
        ).start()
        args.grpc_url = server.grpc_url
    try:
        result = measure(
            args.grpc_url,
            repeats=args.repeats,
            max_tokens=args.max_tokens,
            temperature=args.temperature,
            question=args.question,
        )
    finally:
        if server is not None:
            server.stop()
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


if __name__ == "__main__":
    sys.exit(main())
