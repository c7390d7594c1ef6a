"""Train the shipped process (PRM) and outcome (ORM) reward models on the generator's own samples.

    python tools/train_reward.py --generator models/generator --prm-out models/prm --orm-out models/orm \
        --test-samples /tmp/test_samples.jsonl

1. Sample solutions with the trained generator (per-request seeds) for train-split
   questions the generator never trained on, and for the dev split (held out).
2. Label them automatically: step labels from ``check_steps`` against the gold
   solution (Math-Shepherd style: wrong from the first bad step on), outcome labels
   from the boxed integer.
3. Train a PRM (``LlamaForTokenClassification``, one logit read at each step's
   closing separator) and an ORM (``LlamaForSequenceClassification``), both small
   Llama backbones initialised from the generator's embeddings and first layers.
4. Report PRM step-level AUC and ORM AUC on the dev samples; with
   ``--test-samples`` (written by ``tools/calibrate.py --save-samples``) also
   best-of-k accuracy by ORM score and by PRM min-step score.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scaffolding_backend.datasets.arithmetic import (  # noqa: E402
    PROMPT_TEMPLATE,
    check_steps,
    is_correct,
    last_boxed_int,
    make_split,
    read_jsonl,
)
from scaffolding_backend.engines.reward_model import (  # noqa: E402
    RewardEngine,
    build_reward_input,
    score_logits,
)


def auc(scores, labels) -> float:
    """ROC AUC (Mann-Whitney U with average ranks for ties)."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def sample_solutions(generator_dir, problems, k, temperature, seed, max_tokens, batch_size):
    from scaffolding_backend.engines.causal_lm import CausalLMEngine, GenerationRequest

    engine = CausalLMEngine(generator_dir)
    reqs = [
        GenerationRequest(prompt=PROMPT_TEMPLATE.format(question=p["question"]), max_tokens=max_tokens,
                          temperature=temperature, top_p=1.0, top_k=0, seed=seed + qi * k + j)
        for qi, p in enumerate(problems) for j in range(k)
    ]
    texts = []
    for i in range(0, len(reqs), batch_size):
        texts += [r.text for r in engine.generate(reqs[i:i + batch_size])]
    out = []
    for qi, p in enumerate(problems):
        for j in range(k):
            t = texts[qi * k + j]
            out.append({
                "question": p["question"], "answer": p["answer"], "response": t,
                "step_labels": check_steps(p["question"], t, gold=p["solution"]),
                "correct": is_correct(t, p["answer"]),
            })
    return out


def build_model(generator_dir: str, kind: str, layers: int, seed: int):
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForSequenceClassification, LlamaForTokenClassification

    torch.manual_seed(seed)
    gen = AutoModelForCausalLM.from_pretrained(generator_dir, dtype=torch.float32)
    cfg = LlamaConfig(**{k: v for k, v in gen.config.to_dict().items()
                         if k not in ("architectures", "num_hidden_layers", "tie_word_embeddings", "layer_types")})
    cfg.num_hidden_layers = layers
    cfg.num_labels = 1
    cfg.tie_word_embeddings = False
    cfg.pad_token_id = gen.config.pad_token_id if gen.config.pad_token_id is not None else gen.config.eos_token_id
    cls = LlamaForTokenClassification if kind == "prm" else LlamaForSequenceClassification
    model = cls(cfg)
    src = {k[len("model."):]: v for k, v in gen.state_dict().items() if k.startswith("model.")}
    src = {k: v for k, v in src.items() if not k.startswith("layers.") or int(k.split(".")[1]) < layers}
    missing, unexpected = model.model.load_state_dict(src, strict=False)
    assert not unexpected and not missing, (missing, unexpected)
    return model


def train_one(kind, model, tokenizer, train, dev, args, t0):
    pad_id = model.config.pad_token_id
    built = [build_reward_input(tokenizer, s["question"], s["response"]) for s in train]
    targets = [s["step_labels"] if kind == "prm" else [s["correct"]] for s in train]
    for (ids, pos), y in zip(built, targets):  # PRM: a response with no step text gets one (False) label
        if kind == "prm" and len(y) != len(pos):
            y[:] = (y + [False] * len(pos))[: len(pos)]
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    n_steps = args.epochs * ((len(built) + args.batch_size - 1) // args.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=n_steps, pct_start=0.05)
    rng = random.Random(args.seed)
    order = list(range(len(built)))
    step = 0
    model.train()
    for epoch in range(args.epochs):
        rng.shuffle(order)
        for i in range(0, len(order), args.batch_size):
            idx = order[i:i + args.batch_size]
            logits = score_logits(model, kind, pad_id, [built[j][0] for j in idx], [built[j][1] for j in idx])
            x = torch.cat(logits)
            y = torch.tensor([float(v) for j in idx for v in targets[j]])
            loss = torch.nn.functional.binary_cross_entropy_with_logits(x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            if step % 50 == 0:
                print(f"[{time.time() - t0:.0f}s] {kind} epoch {epoch} step {step}/{n_steps} loss {loss.item():.4f}", flush=True)
            step += 1
    model.eval()


def evaluate(engine: RewardEngine, samples):
    res = engine.score([(s["question"], s["response"]) for s in samples])
    out = {}
    if engine.kind == "prm":
        xs, ys = [], []
        for r, s in zip(res, samples):
            n = min(len(r.step_scores), len(s["step_labels"]))
            xs += r.step_scores[:n]
            ys += s["step_labels"][:n]
        out["step_auc"] = auc(xs, ys)
        out["n_steps"] = len(ys)
        out["step_positive_rate"] = float(np.mean(ys))
        out["outcome_auc_min_step"] = auc([min(r.step_scores) for r in res], [s["correct"] for s in samples])
        out["outcome_auc_last_step"] = auc([r.score for r in res], [s["correct"] for s in samples])
    else:
        out["outcome_auc"] = auc([r.score for r in res], [s["correct"] for s in samples])
    out["n_solutions"] = len(samples)
    out["solution_positive_rate"] = float(np.mean([s["correct"] for s in samples]))
    return out


def best_of_k(engines: dict, test_samples_path: str) -> dict:
    rows = read_jsonl(test_samples_path)
    items = [(r["question"], t) for r in rows for t in r["samples"]]
    k = len(rows[0]["samples"])
    gold = [int(r["answer"]) for r in rows]
    answers = [[last_boxed_int(t) for t in r["samples"]] for r in rows]
    out = {"n_questions": len(rows), "k": k}
    out["single_sample"] = float(np.mean([a == g for ans, g in zip(answers, gold) for a in ans]))
    out["pass_at_k"] = float(np.mean([g in ans for ans, g in zip(answers, gold)]))
    maj = []
    for ans, g in zip(answers, gold):
        votes = Counter(a for a in ans if a is not None)
        top = max(votes.values()) if votes else 0
        m = next((a for a in ans if a is not None and votes[a] == top), None)
        maj.append(m == g)
    out["majority"] = float(np.mean(maj))
    for name, engine in engines.items():
        res = engine.score(items)
        if engine.kind == "prm":
            scores = {"prm_min": [min(r.step_scores) for r in res], "prm_last": [r.score for r in res]}
        else:
            scores = {"orm": [r.score for r in res]}
        for label, sc in scores.items():
            hit = []
            for qi, g in enumerate(gold):
                s = sc[qi * k:(qi + 1) * k]
                hit.append(answers[qi][int(np.argmax(s))] == g)
            out[f"best_of_k_{label}"] = float(np.mean(hit))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generator", default="models/generator")
    ap.add_argument("--prm-out", default="models/prm")
    ap.add_argument("--orm-out", default="models/orm")
    ap.add_argument("--train-offset", type=int, default=150_000,
                    help="skip the first N train-split questions (the generator's own training questions)")
    ap.add_argument("--n-questions", type=int, default=1500)
    ap.add_argument("--k", type=int, default=4, help="samples per question")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--max-tokens", type=int, default=200)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dev-data", default="data/dev.jsonl")
    ap.add_argument("--test-samples", default=None, help="calibrate.py --save-samples output, for best-of-k")
    ap.add_argument("--cache", default=None, help="optional JSON file to cache sampled+labelled solutions")
    args = ap.parse_args()

    t0 = time.time()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.generator)
    if args.cache and Path(args.cache).exists():
        cached = json.loads(Path(args.cache).read_text())
        train, dev = cached["train"], cached["dev"]
    else:
        fresh = make_split("train", args.train_offset + args.n_questions)[args.train_offset:]
        train_problems = [p.to_json() for p in fresh]
        train = sample_solutions(args.generator, train_problems, args.k, args.temperature, args.seed * 7919 + 1,
                                 args.max_tokens, 64)
        print(f"[{time.time() - t0:.0f}s] sampled {len(train)} train solutions", flush=True)
        dev = sample_solutions(args.generator, read_jsonl(args.dev_data), args.k, args.temperature,
                               args.seed * 7919 + 5_000_000, args.max_tokens, 64)
        print(f"[{time.time() - t0:.0f}s] sampled {len(dev)} dev solutions", flush=True)
        if args.cache:
            Path(args.cache).write_text(json.dumps({"train": train, "dev": dev}))
    n_steps = sum(len(s["step_labels"]) for s in train)
    print(f"train: {len(train)} solutions, {np.mean([s['correct'] for s in train]):.1%} correct; "
          f"{n_steps} steps, {np.mean([v for s in train for v in s['step_labels']]):.1%} steps correct", flush=True)

    engines = {}
    report = {}
    for kind, out_dir in (("prm", args.prm_out), ("orm", args.orm_out)):
        t_kind = time.time()
        model = build_model(args.generator, kind, args.layers, args.seed)
        train_one(kind, model, tokenizer, train, dev, args, t0)
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
        cfg_path = out / "tokenizer_config.json"  # same class name as the generator's tokenizer
        tok_cfg = json.loads(cfg_path.read_text())
        tok_cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
        cfg_path.write_text(json.dumps(tok_cfg, indent=2) + "\n")
        engine = RewardEngine(str(out))
        assert engine.kind == kind
        metrics = evaluate(engine, dev)
        metrics["params"] = sum(p.numel() for p in model.parameters())
        metrics["train_seconds"] = round(time.time() - t_kind, 1)
        engines[kind] = engine
        report[kind] = metrics
        print(f"[{time.time() - t0:.0f}s] {kind} dev metrics: {json.dumps(metrics)}", flush=True)
    if args.test_samples:
        report["best_of_k_test"] = best_of_k(engines, args.test_samples)
        print(f"best-of-k on test samples: {json.dumps(report['best_of_k_test'])}", flush=True)
    wall = time.time() - t0
    report["wall_time_s"] = round(wall, 1)
    report["command"] = " ".join(["python"] + sys.argv)
    report["args"] = vars(args)
    report["train_data"] = {"solutions": len(train), "correct_rate": float(np.mean([s["correct"] for s in train])),
                            "steps": n_steps}
    for kind, out_dir in (("prm", args.prm_out), ("orm", args.orm_out)):
        (Path(out_dir) / "reward_info.json").write_text(json.dumps({"kind": kind, **report}, indent=2) + "\n")
    print(f"wall time {wall:.0f}s ({wall / 60:.1f} min)", flush=True)


if __name__ == "__main__":
    main()
