"""Train classifier reward models (a PRM and the shipped ORM) on the generator's own samples.

    python -m scaffolding_training.train_reward --generator models/generator \
        --prm-out runs/prm_classifier --orm-out models/orm \
        --test-samples /tmp/test_samples.jsonl    # defaults otherwise

The shipped PRM is not trained here: it is a likelihood verifier, a language model
trained by ``scaffolding_training/train_generator.py`` (models/prm/README.md). This
script trains the classifier PRM that the shipped ORM starts from, and evaluates any reward model
directory, the likelihood PRM included, with ``--eval-only``.

1. Sample solutions with the trained generator (per-request seeds, T = 0.8 as the
   methods sample) for train-split questions the generator never trained on, and for
   the dev split (held out).
2. Label them automatically: step labels from ``check_steps`` against the gold
   solution (Math-Shepherd style: wrong from the first bad step on), outcome labels
   from the boxed integer. Add synthetic negatives made from those samples with
   ``slip_result`` (one result digit mis-written, the generator's typical error).
3. Train a PRM (``LlamaForTokenClassification``, one logit read at each step's
   closing separator) and an ORM (``LlamaForSequenceClassification``): the generator's
   embeddings and layers plus two new layers. Besides the step/outcome labels, the same
   head is trained at every written result digit to say whether the result is still
   right up to that digit (``result_digit_labels``), which is what teaches a model this
   small to check arithmetic rather than to guess from the question's difficulty.
4. Report on the dev samples: PRM step-level AUC, ORM AUC, and for both the
   within-question win rate (does a right solution outscore a wrong one for the same
   question: what best-of-N needs); with ``--test-samples`` (written by
   ``scaffolding_training/calibrate.py --save-samples``) also best-of-k accuracy by ORM score and by
   PRM min-step score.
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

from scaffolding_backend.engines.reward_model import (
    RewardEngine,
    RewardInput,
    RewardItem,
    build_reward_input,
    pad_right,
    score_logits,
)
from scaffolding_backend.kernel.prompts import PromptFormat
from scaffolding_training.arithmetic import (
    PROMPT_TEMPLATE,
    check_steps,
    is_correct,
    last_boxed_int,
    make_split,
    read_jsonl,
    result_digit_labels,
    slip_result,
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
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def sample_solutions(generator_dir, problems, k, temperature, seed, max_tokens, batch_size):
    from scaffolding_backend.engines.causal_lm import CausalLMEngine, GenerationRequest

    engine = CausalLMEngine(generator_dir)
    reqs = [
        GenerationRequest(
            prompt=PROMPT_TEMPLATE.format(question=p["question"]),
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=1.0,
            top_k=0,
            seed=seed + qi * k + j,
        )
        for qi, p in enumerate(problems)
        for j in range(k)
    ]
    texts = []
    for i in range(0, len(reqs), batch_size):
        texts += [r.text for r in engine.generate(reqs[i : i + batch_size])]
    out = []
    for qi, p in enumerate(problems):
        for j in range(k):
            t = texts[qi * k + j]
            out.append(
                {
                    "question": p["question"],
                    "answer": p["answer"],
                    "response": t,
                    "step_labels": check_steps(p["question"], t, gold=p["solution"]),
                    "correct": is_correct(t, p["answer"]),
                }
            )
    return out


def add_slips(samples, per_solution: int, seed: int) -> tuple[list[dict], list[dict]]:
    """Synthetic negatives made from the generator's own samples with ``slip_result``.

    PRM: the sample cut after a step of its correct prefix whose result gets one wrong
    digit (labels: the prefix right, that step wrong). ORM: the same slip on the last step
    of a correct solution, which leaves a complete solution with a wrong boxed answer.
    """
    rng = random.Random(seed)
    prm, orm = [], []
    for s in samples:
        prefix = [i for i, ok in enumerate(s["step_labels"]) if ok]
        for i in rng.sample(prefix, min(per_solution, len(prefix))):
            text = slip_result(s["response"], i, rng)
            if text is not None:
                prm.append(
                    {**s, "response": text, "step_labels": [True] * i + [False], "correct": False}
                )
        last = len(s["step_labels"]) - 1
        if s["correct"] and rng.random() < per_solution / max(1, len(s["step_labels"])):
            text = slip_result(s["response"], last, rng)
            if text is not None and not is_correct(text, s["answer"]):
                orm.append(
                    {
                        **s,
                        "response": text,
                        "step_labels": [True] * last + [False],
                        "correct": False,
                    }
                )
    return prm, orm


def build_model(
    generator_dir: str,
    kind: str,
    layers: int,
    extra_layers: int,
    seed: int,
    init_from: str | None = None,
):
    """A reward model on the generator's embeddings and first ``layers`` layers, plus
    ``extra_layers`` new ones on top: the generator's last layer is where it forms its own
    prediction of each result digit, and only a later layer can compare that prediction
    with the digit actually written."""
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForTokenClassification,
        LlamaConfig,
        LlamaForSequenceClassification,
        LlamaForTokenClassification,
    )

    torch.manual_seed(seed)
    gen = AutoModelForCausalLM.from_pretrained(generator_dir, dtype=torch.float32)
    cfg = LlamaConfig(
        **{
            k: v
            for k, v in gen.config.to_dict().items()
            if k not in ("architectures", "num_hidden_layers", "tie_word_embeddings", "layer_types")
        }
    )
    cfg.num_hidden_layers = layers + extra_layers
    cfg.num_labels = 1
    cfg.tie_word_embeddings = False
    cfg.pad_token_id = (
        gen.config.pad_token_id if gen.config.pad_token_id is not None else gen.config.eos_token_id
    )
    cls = LlamaForTokenClassification if kind == "prm" else LlamaForSequenceClassification
    model = cls(cfg)
    src = {k[len("model.") :]: v for k, v in gen.state_dict().items() if k.startswith("model.")}
    src = {
        k: v for k, v in src.items() if not k.startswith("layers.") or int(k.split(".")[1]) < layers
    }
    missing, unexpected = model.model.load_state_dict(src, strict=False)
    assert not unexpected and all(int(k.split(".")[1]) >= layers for k in missing), (
        missing,
        unexpected,
    )
    if init_from:  # e.g. the ORM from the trained PRM: its layers already check the arithmetic
        trained = AutoModelForTokenClassification.from_pretrained(
            init_from, dtype=torch.float32
        ).state_dict()
        model.load_state_dict({k: v for k, v in trained.items() if k != "score.bias"}, strict=True)
    return model


def digit_targets(tokenizer, response: str, built: RewardInput) -> tuple[list[int], list[bool]]:
    """Token positions (in ``built.ids``) of every written result digit, and whether the
    result is right up to that digit: dense supervision at the place where a slip happens,
    so the PRM learns to compare what is written with what it would compute. Each step is
    tokenized again, with character offsets, to place it inside the span it was given."""
    positions, labels = [], []
    for step, (start, end) in zip(PromptFormat().split_steps(response), built.spans):
        encoded = tokenizer(step, add_special_tokens=False, return_offsets_mapping=True)
        assert len(encoded["input_ids"]) == end - start, (
            "digit positions out of step with build_reward_input"
        )
        by_char = result_digit_labels(step)
        for t, (a, b) in enumerate(encoded["offset_mapping"]):
            if b - a == 1 and a in by_char:
                positions.append(start + t)
                labels.append(by_char[a])
    return positions, labels


def token_logits(model, pad_id: int, batch_ids: list[list[int]]) -> torch.Tensor:
    """[batch, length] logits of the reward head at every token (right-padded rows). Both
    heads are a linear ``score`` on the last hidden states: the PRM reads it at step ends,
    the ORM at the last token, and training also supervises it at result digits."""
    ids, mask = pad_right(batch_ids, pad_id)
    hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
    return model.score(hidden)[..., 0]


def train_one(kind, model, tokenizer, train, dev, args, t0):
    epochs = args.orm_epochs if kind == "orm" else args.epochs
    pad_id = model.config.pad_token_id
    built = [build_reward_input(tokenizer, s["question"], s["response"]) for s in train]
    targets = [s["step_labels"] if kind == "prm" else [s["correct"]] for s in train]
    for (_ids, pos, _), y in zip(
        built, targets
    ):  # PRM: a response with no step text gets one (False) label
        if kind == "prm" and len(y) != len(pos):
            y[:] = (y + [False] * len(pos))[: len(pos)]
    digits = None
    if args.digit_loss_weight > 0:
        digits = [digit_targets(tokenizer, s["response"], b) for s, b in zip(train, built)]

    def pretrained(
        name: str,
    ) -> bool:  # the generator's embeddings and layers, not the new layers or head
        return name.startswith("model.") and not (
            name.startswith("model.layers.") and int(name.split(".")[2]) >= args.layers
        )

    named = list(model.named_parameters())
    groups = [
        {"params": [p for n, p in named if pretrained(n)], "lr": args.lr * args.backbone_lr_scale},
        {"params": [p for n, p in named if not pretrained(n)], "lr": args.lr},
    ]
    opt = torch.optim.AdamW(groups, lr=args.lr, weight_decay=0.01)
    n_steps = epochs * ((len(built) + args.batch_size - 1) // args.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=[g["lr"] for g in groups], total_steps=n_steps, pct_start=0.05
    )
    rng = random.Random(args.seed)
    order = list(range(len(built)))
    step = 0
    model.train()
    for epoch in range(epochs):
        rng.shuffle(order)
        for i in range(0, len(order), args.batch_size):
            idx = order[i : i + args.batch_size]
            logits = token_logits(model, pad_id, [built[j].ids for j in idx])
            label_pos = [
                built[j].positions if kind == "prm" else [len(built[j].ids) - 1] for j in idx
            ]
            x = torch.cat([logits[r, pos] for r, pos in enumerate(label_pos)])
            y = torch.tensor([float(v) for j in idx for v in targets[j]])
            loss = torch.nn.functional.binary_cross_entropy_with_logits(x, y)
            if digits is not None:
                dx = torch.cat([logits[r, digits[j][0]] for r, j in enumerate(idx)])
                dy = torch.tensor([float(v) for j in idx for v in digits[j][1]])
                if len(dy):
                    loss = (
                        loss
                        + args.digit_loss_weight
                        * torch.nn.functional.binary_cross_entropy_with_logits(dx, dy)
                    )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            if step % 50 == 0:
                print(
                    f"[{time.time() - t0:.0f}s] {kind} epoch {epoch} step {step}/{n_steps} "
                    f"loss {loss.item():.4f}",
                    flush=True,
                )
            step += 1
        if args.monitor:
            model.eval()
            with torch.no_grad():
                res = [
                    score_logits(model, kind, pad_id, [ids], [pos])[0]
                    for ids, pos, _ in (
                        build_reward_input(tokenizer, d["question"], d["response"]) for d in dev
                    )
                ]
            final = [float(r.min()) if kind == "prm" else float(r[0]) for r in res]
            print(
                f"[{time.time() - t0:.0f}s] {kind} after epoch {epoch}: "
                f"dev within-question win rate {within_question_win_rate(final, dev):.3f}",
                flush=True,
            )
            model.train()
    model.eval()


def within_question_win_rate(scores, samples) -> float:
    """P(a correct solution outscores a wrong one for the same question), ties count half:
    what best-of-N needs, unlike a pooled AUC that question difficulty alone can inflate."""
    by_question: dict[str, list[tuple[float, bool]]] = {}
    for score, s in zip(scores, samples):
        by_question.setdefault(s["question"], []).append((score, s["correct"]))
    wins = pairs = 0.0
    for items in by_question.values():
        for good, ok in items:
            for bad, bad_ok in items:
                if ok and not bad_ok:
                    pairs += 1
                    wins += 1.0 if good > bad else 0.5 if good == bad else 0.0
    return wins / pairs if pairs else float("nan")


def evaluate(engine: RewardEngine, samples):
    res = engine.score([RewardItem(s["question"], s["response"]) for s in samples])
    out = {}
    final = [r.score for r in res] if engine.kind == "orm" else [min(r.step_scores) for r in res]
    out["within_question_win_rate"] = within_question_win_rate(final, samples)
    if engine.kind == "prm":
        first_x, first_y = [], []
        for r, s in zip(res, samples):
            for score, ok in zip(r.step_scores, s["step_labels"]):
                first_x.append(score)
                first_y.append(ok)
                if not ok:
                    break
        out["first_error_auc"] = auc(first_x, first_y)
        xs, ys = [], []
        for r, s in zip(res, samples):
            n = min(len(r.step_scores), len(s["step_labels"]))
            xs += r.step_scores[:n]
            ys += s["step_labels"][:n]
        out["step_auc"] = auc(xs, ys)
        out["n_steps"] = len(ys)
        out["step_positive_rate"] = float(np.mean(ys))
        out["outcome_auc_min_step"] = auc(
            [min(r.step_scores) for r in res], [s["correct"] for s in samples]
        )
        out["outcome_auc_last_step"] = auc([r.score for r in res], [s["correct"] for s in samples])
    else:
        out["outcome_auc"] = auc([r.score for r in res], [s["correct"] for s in samples])
    out["n_solutions"] = len(samples)
    out["solution_positive_rate"] = float(np.mean([s["correct"] for s in samples]))
    return out


def best_of_k(engines: dict, test_samples_path: str) -> dict:
    rows = read_jsonl(test_samples_path)
    items = [RewardItem(r["question"], t) for r in rows for t in r["samples"]]
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
    for engine in engines.values():
        res = engine.score(items)
        if engine.kind == "prm":
            scores = {
                "prm_min": [min(r.step_scores) for r in res],
                "prm_last": [r.score for r in res],
            }
        else:
            scores = {"orm": [r.score for r in res]}
        for label, sc in scores.items():
            hit = []
            for qi, g in enumerate(gold):
                s = sc[qi * k : (qi + 1) * k]
                hit.append(answers[qi][int(np.argmax(s))] == g)
            out[f"best_of_k_{label}"] = float(np.mean(hit))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generator", default="models/generator")
    ap.add_argument(
        "--prm-out",
        default="runs/prm_classifier",
        help="the classifier PRM (not shipped; the ORM starts from it)",
    )
    ap.add_argument("--orm-out", default="models/orm")
    ap.add_argument(
        "--train-offset",
        type=int,
        default=150_000,
        help="skip the first N train-split questions (the generator's own training questions)",
    )
    ap.add_argument("--n-questions", type=int, default=1000)
    ap.add_argument("--k", type=int, default=4, help="samples per question")
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--max-tokens", type=int, default=200)
    ap.add_argument(
        "--slips-per-solution",
        type=int,
        default=2,
        help="synthetic negatives per sample: a result digit mis-written (0 = none)",
    )
    ap.add_argument(
        "--layers", type=int, default=4, help="generator layers the reward models start from"
    )
    ap.add_argument("--extra-layers", type=int, default=2, help="new layers on top of them")
    ap.add_argument(
        "--backbone-lr-scale",
        type=float,
        default=1.0,
        help="learning rate of the generator's weights relative to --lr",
    )
    ap.add_argument(
        "--digit-loss-weight",
        type=float,
        default=1.0,
        help="weight of the per-digit loss on written results (0 = step/outcome labels only)",
    )
    ap.add_argument(
        "--monitor", action="store_true", help="print the dev within-question win rate every epoch"
    )
    ap.add_argument(
        "--eval-only",
        action="store_true",
        help="train nothing: evaluate the models already in --prm-out/--orm-out "
        "(writes evaluation.json)",
    )
    ap.add_argument(
        "--orm-from-prm",
        type=int,
        default=1,
        help="1: start the ORM from the PRM just trained (in --prm-out) instead of the generator",
    )
    ap.add_argument("--kinds", default="prm,orm", help="which reward models to train")
    ap.add_argument("--epochs", type=int, default=4, help="PRM epochs")
    ap.add_argument(
        "--orm-epochs", type=int, default=2, help="ORM epochs (it starts from the trained PRM)"
    )
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dev-data", default="data/dev.jsonl")
    ap.add_argument(
        "--test-samples", default=None, help="calibrate.py --save-samples output, for best-of-k"
    )
    ap.add_argument(
        "--cache", default=None, help="optional JSON file to cache sampled+labelled solutions"
    )
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
        fresh = make_split("train", args.train_offset + args.n_questions)[args.train_offset :]
        train_problems = [p.to_json() for p in fresh]
        train = sample_solutions(
            args.generator,
            train_problems,
            args.k,
            args.temperature,
            args.seed * 7919 + 1,
            args.max_tokens,
            64,
        )
        print(f"[{time.time() - t0:.0f}s] sampled {len(train)} train solutions", flush=True)
        dev = sample_solutions(
            args.generator,
            read_jsonl(args.dev_data),
            args.k,
            args.temperature,
            args.seed * 7919 + 5_000_000,
            args.max_tokens,
            64,
        )
        print(f"[{time.time() - t0:.0f}s] sampled {len(dev)} dev solutions", flush=True)
        if args.cache:
            Path(args.cache).write_text(json.dumps({"train": train, "dev": dev}))
    n_steps = sum(len(s["step_labels"]) for s in train)
    print(
        f"train: {len(train)} solutions, {np.mean([s['correct'] for s in train]):.1%} correct; "
        f"{n_steps} steps, "
        f"{np.mean([v for s in train for v in s['step_labels']]):.1%} steps correct",
        flush=True,
    )

    slips = dict(zip(("prm", "orm"), add_slips(train, args.slips_per_solution, args.seed)))
    print(
        f"slipped-digit negatives: {len(slips['prm'])} partial solutions (PRM), "
        f"{len(slips['orm'])} complete ones (ORM)",
        flush=True,
    )

    engines = {}
    report = {}
    outputs = {"prm": args.prm_out, "orm": args.orm_out}
    kinds = [k for k in args.kinds.split(",") if k]
    if args.eval_only:
        for kind in kinds:
            engines[kind] = RewardEngine(outputs[kind], num_threads=args.threads)
            report[kind] = evaluate(engines[kind], dev)
            print(f"{kind} dev metrics: {json.dumps(report[kind])}", flush=True)
        if args.test_samples:
            report["best_of_k_test"] = best_of_k(engines, args.test_samples)
            print(f"best-of-k on test samples: {json.dumps(report['best_of_k_test'])}", flush=True)
        report["command"] = " ".join(["python", *sys.argv])
        for kind in kinds:
            (Path(outputs[kind]) / "evaluation.json").write_text(
                json.dumps({"kind": kind, **report}, indent=2) + "\n"
            )
        return
    for kind, out_dir in ((k, outputs[k]) for k in kinds):
        t_kind = time.time()
        init_from = args.prm_out if kind == "orm" and args.orm_from_prm else None
        model = build_model(
            args.generator, kind, args.layers, args.extra_layers, args.seed, init_from
        )
        train_one(kind, model, tokenizer, train + slips[kind], dev, args, t0)
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
    report["command"] = " ".join(["python", *sys.argv])
    report["args"] = vars(args)
    report["train_data"] = {
        "solutions": len(train),
        "correct_rate": float(np.mean([s["correct"] for s in train])),
        "steps": n_steps,
        "slip_negatives": {k: len(v) for k, v in slips.items()},
    }
    for kind, out_dir in ((k, outputs[k]) for k in kinds):
        (Path(out_dir) / "reward_info.json").write_text(
            json.dumps({"kind": kind, **report}, indent=2) + "\n"
        )
    print(f"wall time {wall:.0f}s ({wall / 60:.1f} min)", flush=True)


if __name__ == "__main__":
    main()
