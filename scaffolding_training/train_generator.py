"""Train the tiny shipped generator (tokenizer + Llama causal LM) from scratch on CPU.

    python -m scaffolding_training.train_generator --out models/generator --steps 5000 \
        --stop-after 3400 --result-digit-smoothing 0.1

(those are the defaults). Deterministic (fixed seeds, fixed step count, 2 threads).
Trains on the arithmetic task family of ``scaffolding_training.arithmetic``: the natural-language
solution format (``PROMPT_TEMPLATE``) and, for a fraction of examples, the
program-aided format (``PROGRAM_PROMPT_TEMPLATE``). Loss is on the completion only.

``--result-digit-smoothing`` is label smoothing restricted to the digits of computed
results: the model keeps its argmax but learns to put some probability on other digits
there, so temperature sampling makes arithmetic slips that differ from sample to
sample (what voting and verifiers exploit), while greedy decoding stays accurate.
0 trains with plain cross-entropy.

``--init-from DIR`` fine-tunes a trained model (its tokenizer and weights) instead of
starting from scratch, ``--check-fraction`` follows that fraction of the solutions with a
backward check after the answer (``Problem.checked_solution``), and
``--answer-during-check`` cuts that fraction of the checks short with the answer line
(``Problem.answered_during_check``). Together they make ``models/reasoner``, a generator
that keeps checking an answer it already has and says it when asked part-way:

    python -m scaffolding_training.train_generator --init-from models/generator \
        --out models/reasoner --check-fraction 1 --answer-during-check 0.25 \
        --program-fraction 0 --n-train 30000 --steps 1000 --stop-after 0 --lr 1e-3 --warmup 50
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import torch

from scaffolding_training.arithmetic import (
    PROGRAM_PROMPT_TEMPLATE,
    PROMPT_TEMPLATE,
    make_split,
    result_digit_labels,
)

EOS = "<|endoftext|>"


def build_tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS,
        pad_token=EOS,
        bos_token=EOS,
        unk_token=None,
        padding_side="left",
        model_max_length=512,
    )
    return fast


def examples(
    problems,
    program_fraction: float,
    seed: int,
    check_fraction: float = 0.0,
    answer_during_check: float = 0.0,
) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    out = []
    for p in problems:
        if rng.random() < program_fraction:
            out.append((PROGRAM_PROMPT_TEMPLATE.format(question=p.question), p.program))
        else:
            # a fraction of 0 draws nothing, so the shipped generator's data stays as it was
            checked = check_fraction > 0 and rng.random() < check_fraction
            solution = p.checked_solution if checked else p.solution
            if checked and answer_during_check > 0 and rng.random() < answer_during_check:
                solution = p.answered_during_check(rng.randint(1, p.check_steps))
            out.append((PROMPT_TEMPLATE.format(question=p.question), solution))
    return out


def result_digit_masks(
    completions: list[str], offsets: list[list[tuple[int, int]]]
) -> list[list[bool]]:
    """Per completion token: is it a digit of a computed result (``= 43``, ``\\boxed{24}``)?
    The same digits the reward models get per-digit labels for (``result_digit_labels``)."""
    masks = []
    for text, token_spans in zip(completions, offsets):
        result_chars = result_digit_labels(text).keys()
        masks.append(
            [
                end > start and all(i in result_chars for i in range(start, end))
                for start, end in token_spans
            ]
        )
    return masks


def smoothed_result_loss(logits, labels, smoothed, digit_ids, epsilon: float):
    """Next-token cross-entropy; where ``smoothed``, the target keeps 1-epsilon and spreads epsilon
    evenly over the ten digits, so the model learns to be unsure of the results it computes."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    target = labels[:, 1:]
    valid = target != -100
    nll = -logp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    spread = -logp[..., digit_ids].mean(-1)
    per_token = torch.where(smoothed[:, 1:], (1 - epsilon) * nll + epsilon * spread, nll)
    return per_token[valid].mean()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="models/generator")
    ap.add_argument("--n-train", type=int, default=150_000)
    ap.add_argument("--program-fraction", type=float, default=0.1)
    ap.add_argument(
        "--check-fraction",
        type=float,
        default=0.0,
        help="fraction of natural-language solutions followed by a backward check",
    )
    ap.add_argument(
        "--answer-during-check",
        type=float,
        default=0.0,
        help="fraction of checked solutions cut after a random check step and closed with "
        "the answer line",
    )
    ap.add_argument(
        "--init-from",
        default=None,
        help="fine-tune this trained model directory (tokenizer and weights) instead of "
        "training from scratch",
    )
    ap.add_argument("--vocab-size", type=int, default=1000)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--intermediate", type=int, default=384)
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--batch-size", type=int, default=20)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--result-digit-smoothing",
        type=float,
        default=0.1,
        help="label smoothing over the ten digit tokens, only for the digits of computed results "
        "(after '=' and inside \\boxed{}) of natural-language solutions",
    )
    ap.add_argument(
        "--stop-after",
        type=int,
        default=3400,
        help="stop after this many steps while the schedule spans --steps "
        "(the shipped checkpoint: 3400); 0 = run all --steps",
    )
    ap.add_argument(
        "--checkpoint-every", type=int, default=0, help="also save model copies every N steps"
    )
    ap.add_argument("--checkpoint-dir", default=None)
    ap.add_argument(
        "--max-minutes", type=float, default=19.5, help="safety stop (keeps the run within budget)"
    )
    args = ap.parse_args()
    if args.n_train < args.batch_size:
        ap.error(f"--n-train must be at least --batch-size ({args.batch_size})")

    t0 = time.time()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    problems = make_split("train", args.n_train)
    pairs = examples(
        problems, args.program_fraction, args.seed, args.check_fraction, args.answer_during_check
    )
    if args.init_from:
        from transformers import PreTrainedTokenizerFast

        tokenizer = PreTrainedTokenizerFast.from_pretrained(args.init_from)
    else:
        tokenizer = build_tokenizer([p + c for p, c in pairs[:20000]], args.vocab_size)
    tokenizer.save_pretrained(out)
    # name the class every transformers release knows (5.x maps it to its TokenizersBackend)
    cfg_path = out / "tokenizer_config.json"
    tok_cfg = json.loads(cfg_path.read_text())
    tok_cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg_path.write_text(json.dumps(tok_cfg, indent=2) + "\n")
    eos_id = tokenizer.convert_tokens_to_ids(EOS)
    print(f"[{time.time() - t0:.0f}s] {len(pairs)} examples, vocab {len(tokenizer)}", flush=True)

    prompt_ids = tokenizer([p for p, _ in pairs], add_special_tokens=False)["input_ids"]
    comp_ids = tokenizer([c for _, c in pairs], add_special_tokens=False)["input_ids"]
    seqs = [(pi + ci + [eos_id], len(pi)) for pi, ci in zip(prompt_ids, comp_ids)]
    digit_ids = tokenizer.convert_tokens_to_ids(list("0123456789"))
    smooth_masks = None
    if args.result_digit_smoothing > 0:
        completions = [
            c if p.endswith("Answer:\n") else "" for p, c in pairs
        ]  # natural-language solutions only
        offsets = tokenizer(completions, add_special_tokens=False, return_offsets_mapping=True)[
            "offset_mapping"
        ]
        smooth_masks = [
            [False] * len(pi) + (mask or [False] * len(ci)) + [False]
            for pi, ci, mask in zip(prompt_ids, comp_ids, result_digit_masks(completions, offsets))
        ]
        n_smoothed = sum(map(sum, smooth_masks))
        print(
            f"[{time.time() - t0:.0f}s] {n_smoothed} result-digit tokens smoothed "
            f"(epsilon {args.result_digit_smoothing})",
            flush=True,
        )
    lens = [len(s) for s, _ in seqs]
    print(
        f"[{time.time() - t0:.0f}s] tokens/example mean {sum(lens) / len(lens):.0f} "
        f"max {max(lens)}",
        flush=True,
    )

    if args.init_from:
        model = LlamaForCausalLM.from_pretrained(args.init_from, dtype=torch.float32)
    else:
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=args.hidden,
            intermediate_size=args.intermediate,
            num_hidden_layers=args.layers,
            num_attention_heads=args.heads,
            num_key_value_heads=args.heads,
            max_position_embeddings=512,
            tie_word_embeddings=True,
            rope_theta=10000.0,
            bos_token_id=eos_id,
            eos_token_id=eos_id,
            pad_token_id=eos_id,
        )
        model = LlamaForCausalLM(config)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"params {n_params:,}", flush=True)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.98),
        eps=1e-8,
    )

    def lr_at(step: int) -> float:
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        frac = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))

    rng = random.Random(args.seed + 1)

    def batches():
        """Shuffled batches of similar length (less padding), reshuffled each epoch."""
        while True:
            order = list(range(len(seqs)))
            rng.shuffle(order)
            # sort within chunks of 50 batches (fewer when the data is smaller than that)
            chunk = args.batch_size * min(50, len(order) // args.batch_size)
            for c in range(0, len(order) - chunk + 1, chunk):
                part = sorted(order[c : c + chunk], key=lambda i: len(seqs[i][0]))
                group = [part[b : b + args.batch_size] for b in range(0, chunk, args.batch_size)]
                rng.shuffle(group)
                yield from group

    batch_iter = batches()
    model.train()
    t_train = time.time()
    ema = None
    step = 0
    for step in range(args.steps):
        batch_idx = next(batch_iter)
        batch = [seqs[i] for i in batch_idx]
        L = max(len(s) for s, _ in batch)
        ids = torch.full((len(batch), L), eos_id, dtype=torch.long)
        mask = torch.zeros((len(batch), L), dtype=torch.long)
        labels = torch.full((len(batch), L), -100, dtype=torch.long)
        for r, (s, plen) in enumerate(batch):
            ids[r, : len(s)] = torch.tensor(s)
            mask[r, : len(s)] = 1
            labels[r, plen : len(s)] = torch.tensor(s[plen:])
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        if smooth_masks is None:
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        else:
            smoothed = torch.zeros((len(batch), L), dtype=torch.bool)
            for r, i in enumerate(batch_idx):
                smoothed[r, : len(smooth_masks[i])] = torch.tensor(smooth_masks[i])
            logits = model(input_ids=ids, attention_mask=mask).logits
            loss = smoothed_result_loss(
                logits, labels, smoothed, digit_ids, args.result_digit_smoothing
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        if step % 100 == 0 or step == args.steps - 1:
            el = time.time() - t_train
            print(
                f"step {step} loss {ema:.4f} lr {lr_at(step):.2e} {el:.0f}s "
                f"({el / (step + 1):.3f}s/step)",
                flush=True,
            )
        if (
            args.checkpoint_every
            and args.checkpoint_dir
            and (step + 1) % args.checkpoint_every == 0
        ):
            ck = Path(args.checkpoint_dir) / f"step-{step + 1}"
            model.save_pretrained(ck, safe_serialization=True)
            tokenizer.save_pretrained(ck)
        if args.stop_after and step + 1 >= args.stop_after:
            print(f"stopping after step {step}: --stop-after reached", flush=True)
            break
        if time.time() - t0 > args.max_minutes * 60:
            print(f"stopping at step {step}: --max-minutes reached", flush=True)
            break

    model.eval()
    model.generation_config = GenerationConfig(
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        bos_token_id=eos_id,
        max_new_tokens=256,
        do_sample=False,
    )
    model.save_pretrained(out, safe_serialization=True)
    wall = time.time() - t0
    meta = {
        "command": " ".join(["python -m scaffolding_training.train_generator", *sys.argv[1:]]),
        "args": vars(args),
        "params": n_params,
        "steps_done": step + 1,
        "final_loss_ema": ema,
        "wall_time_s": round(wall, 1),
    }
    (out / "training_info.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wall time {wall:.0f}s ({wall / 60:.1f} min); saved to {out}", flush=True)


if __name__ == "__main__":
    main()
