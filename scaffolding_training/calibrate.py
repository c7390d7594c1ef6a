"""Measure how much headroom the shipped generator leaves for inference-time compute.

    python -m scaffolding_training.calibrate --model models/generator --n 400

Prints greedy accuracy, single-sample accuracy at T=0.8 (mean over all samples),
majority@8 (vote over the integers boxed by 8 samples at T=0.8) and pass@8 on the
first N questions of ``data/test.jsonl``. Every sample has its own seed, so the
table is reproducible. ``--save-samples`` writes the sampled solutions (used to
measure best-of-8 with the reward models).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter

import torch

from scaffolding_backend.engines.causal_lm import CausalLMEngine, GenerationRequest
from scaffolding_training.arithmetic import PROMPT_TEMPLATE, last_boxed_int, read_jsonl


class _EngineSampler:
    """The serving engine itself, so every sample has its own seed and the table is reproducible."""

    def __init__(self, model_dir: str):
        self.engine = CausalLMEngine(model_dir)

    def __call__(self, prompts, temperature, seeds, max_tokens):
        reqs = [
            GenerationRequest(
                prompt=p, max_tokens=max_tokens, temperature=temperature, top_p=1.0, top_k=0, seed=s
            )
            for p, s in zip(prompts, seeds)
        ]
        return [r.text for r in self.engine.generate(reqs)]


def majority(answers: list[int | None]) -> int | None:
    votes = Counter(a for a in answers if a is not None)
    if not votes:
        return None
    best = max(votes.values())
    return next(a for a in answers if a is not None and votes[a] == best)  # tie: earliest sample


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models/generator")
    ap.add_argument("--data", default="data/test.jsonl")
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-greedy", action="store_true")
    ap.add_argument("--save-samples", default=None, help="JSONL of the sampled solutions")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    t0 = time.time()
    data = read_jsonl(args.data)[: args.n]
    sampler = _EngineSampler(args.model)
    prompts = [PROMPT_TEMPLATE.format(question=d["question"]) for d in data]
    gold = [int(d["answer"]) for d in data]

    def run(jobs):  # jobs: list of (prompt, seed); returns texts in order
        texts = []
        for i in range(0, len(jobs), args.batch_size):
            chunk = jobs[i : i + args.batch_size]
            texts += sampler(
                [p for p, _ in chunk],
                args.temperature if jobs is sample_jobs else 0.0,
                [s for _, s in chunk],
                args.max_tokens,
            )
        return texts

    greedy_acc = None
    if not args.no_greedy:
        sample_jobs = None
        greedy = run([(p, 0) for p in prompts])
        greedy_acc = sum(last_boxed_int(t) == g for t, g in zip(greedy, gold)) / len(gold)
    sample_jobs = [
        (prompts[q], args.seed + q * args.k + j) for q in range(len(prompts)) for j in range(args.k)
    ]
    samples = run(sample_jobs)
    per_q = [samples[q * args.k : (q + 1) * args.k] for q in range(len(prompts))]
    answers = [[last_boxed_int(t) for t in texts] for texts in per_q]
    single = sum(a == g for ans, g in zip(answers, gold) for a in ans) / (len(gold) * args.k)
    first = sum(ans[0] == g for ans, g in zip(answers, gold)) / len(gold)
    maj = sum(majority(ans) == g for ans, g in zip(answers, gold)) / len(gold)
    pass_k = sum(g in ans for ans, g in zip(answers, gold)) / len(gold)
    wall = time.time() - t0

    print(
        f"\nmodel {args.model}  data {args.data}  N={len(gold)}  k={args.k}  T={args.temperature}"
    )
    print("| metric | accuracy |")
    print("|---|---|")
    if greedy_acc is not None:
        print(f"| greedy (T=0) | {greedy_acc:.1%} |")
    print(f"| single sample, T={args.temperature} (mean over {args.k} samples) | {single:.1%} |")
    print(f"| single sample, T={args.temperature} (first sample only) | {first:.1%} |")
    print(f"| majority@{args.k}, T={args.temperature} | {maj:.1%} |")
    print(f"| pass@{args.k}, T={args.temperature} | {pass_k:.1%} |")
    print(f"wall time {wall:.0f}s")
    if args.save_samples:
        with open(args.save_samples, "w") as f:
            for d, texts in zip(data, per_q):
                f.write(
                    json.dumps({"question": d["question"], "answer": d["answer"], "samples": texts})
                    + "\n"
                )


if __name__ == "__main__":
    main()
