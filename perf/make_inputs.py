"""Write perf_analyzer's input-data files (``--input-data perf/<name>.json``) from the test split.

    python perf/make_inputs.py [--count 8] [--data data/test.jsonl] [--out perf]

Every file holds ``--count`` entries, one per question; perf_analyzer sends them in turn
(``--input-data`` JSON format: one object per request, an input's ``content`` and its
``shape`` without the batch dimension). Files written:

- ``scaffolding_<method>_<budget>.json`` for ``scaffolding`` (gRPC streaming) and
  ``scaffolding_unary``: the question, the method and its knobs (``max_tokens`` 128), a seed
  per entry, a deadline, ``stream`` false (the final response only);
- ``scaffolding_majority_vote_8_stream.json``: the same with ``stream`` true (a progress
  event per finished sample before the final response; ``scaffolding`` only);
- ``generator.json``: the prompt in the scaffolding models' default format, ``max_tokens``
  128, temperature 0.8, a different seed per entry;
- ``reward.json`` for ``reward`` and ``reward_orm``: the question and its reference solution;
- ``minimal_bls.json`` for ``perf/models/minimal_bls`` (``scaffolding-bench bls`` serves it):
  the prompt in the generator's format and a seed per entry.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# ScaffoldingConfig.prompt_template's default (scaffolding_backend/service/config.py)
PROMPT_TEMPLATE = "Question: {question}\nAnswer:\n"
MAX_TOKENS = 128
DEADLINE_S = 120.0
# (method, budget, knobs): the budget is the number of samples (continuations per step for
# beam search)
SCAFFOLDING_RUNS = [
    ("majority_vote", 8, {"samples": 8}),
    ("best_of_n", 4, {"samples": 4}),
    ("beam_search", 4, {"samples": 4, "beam_width": 2}),
]


def tensor(value: object) -> dict:
    return {"content": [value], "shape": [1]}


def scaffolding_entry(question: str, method: str, knobs: dict, seed: int, stream: bool) -> dict:
    parameters = {**knobs, "max_tokens": MAX_TOKENS}
    return {
        "text_input": tensor(question),
        "method": tensor(method),
        "method_parameters": tensor(json.dumps(parameters, sort_keys=True)),
        "seed": tensor(seed),
        "deadline_s": tensor(DEADLINE_S),
        "stream": tensor(stream),
    }


def generator_entry(question: str, seed: int) -> dict:
    return {
        "text_input": tensor(PROMPT_TEMPLATE.format(question=question)),
        "max_tokens": tensor(MAX_TOKENS),
        "temperature": tensor(0.8),
        "seed": tensor(seed),
    }


def reward_entry(question: str, solution: str) -> dict:
    return {"query": tensor(question), "response": tensor(solution)}


def build(rows: list[dict]) -> dict[str, list[dict]]:
    files: dict[str, list[dict]] = {}
    for method, budget, knobs in SCAFFOLDING_RUNS:
        files[f"scaffolding_{method}_{budget}"] = [
            scaffolding_entry(row["question"], method, knobs, seed, stream=False)
            for seed, row in enumerate(rows, start=1)
        ]
    files["scaffolding_majority_vote_8_stream"] = [
        scaffolding_entry(row["question"], "majority_vote", {"samples": 8}, seed, stream=True)
        for seed, row in enumerate(rows, start=1)
    ]
    files["generator"] = [
        generator_entry(row["question"], seed) for seed, row in enumerate(rows, start=1)
    ]
    files["reward"] = [reward_entry(row["question"], row["solution"]) for row in rows]
    # the generator's prompt and seed: the minimal model adds the rest of the request itself
    files["minimal_bls"] = [
        {key: entry[key] for key in ("text_input", "seed")} for entry in files["generator"]
    ]
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=8, help="entries (questions) per file")
    parser.add_argument("--data", type=Path, default=REPO_ROOT / "data" / "test.jsonl")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "perf")
    args = parser.parse_args(argv)
    with args.data.open() as lines:
        rows = [json.loads(line) for line in lines if line.strip()][: args.count]
    if len(rows) < args.count:
        parser.error(f"{args.data} has {len(rows)} questions, fewer than --count {args.count}")
    args.out.mkdir(parents=True, exist_ok=True)
    for name, entries in build(rows).items():
        path = args.out / f"{name}.json"
        # one request per line, so that a diff shows which entries changed
        lines = ",\n".join("  " + json.dumps(entry, ensure_ascii=False) for entry in entries)
        path.write_text('{"data": [\n' + lines + "\n]}\n")
        print(f"wrote {path} ({len(entries)} entries)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
