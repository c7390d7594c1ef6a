"""CPU reward engine behind Triton's ``reward`` models: a process (PRM) or outcome (ORM)
reward model.

The model directory decides the kind from its saved config:

* ``LlamaForCausalLM`` -> likelihood PRM (a generative verifier): a language model
  trained on correct solutions reads the response, and a step's score is the
  probability it gave the least likely token written so far, from the first step up
  to this one. One mis-written digit is a token a calculator-like model finds very
  unlikely; the running minimum makes every step after it doubtful too, as process
  labels do (wrong from the first bad step on). Separator tokens are not scored.
* ``LlamaForTokenClassification`` -> classifier PRM: one logit per token; the
  probability that a step is correct is read at the step separator that closes it.
* ``LlamaForSequenceClassification`` -> ORM: one logit for the whole response, read at
  its last token.

All see exactly the input built by :func:`build_reward_input` (the one the
training script ``scaffolding_training/train_reward.py`` uses): the generator's prompt
template, then every step followed by the step delimiter, each piece tokenized on its
own so that step boundaries are exact token positions. The prompt format is the
caller's (:class:`RewardItem`), so the scores follow the text the generator wrote.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from ..kernel.prompts import PromptFormat


class RewardItem(NamedTuple):
    """One response to score, with the prompt format its generator used."""

    query: str
    response: str
    prompt_format: PromptFormat = PromptFormat()


@dataclass
class RewardResult:
    step_scores: list[float]
    score: float


class RewardInput(NamedTuple):
    ids: list[int]
    positions: list[int]  # the closing separator's last token, per step
    spans: list[tuple[int, int]]  # [start, end) of each step's own tokens (separator excluded)


def build_reward_input(
    tokenizer: Any,
    query: str,
    response: str,
    max_length: int | None = None,
    prompt_format: PromptFormat = PromptFormat(),
) -> RewardInput:
    """Token ids of (prompt + response), each step's closing-separator position and token span.

    A response with no step text still gets one position (the end of the prompt) and an
    empty span, so every input yields at least one score. With ``max_length`` the prompt
    is cut from the left when needed (steps are kept).
    """
    enc = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]
    ids = enc(prompt_format.prompt(query))
    sep = enc(prompt_format.step_delimiter)
    positions: list[int] = []
    spans: list[tuple[int, int]] = []
    for step in prompt_format.split_steps(response):
        start = len(ids)
        ids = ids + enc(step)
        spans.append((start, len(ids)))
        ids = ids + sep
        positions.append(len(ids) - 1)
    if not positions:
        positions.append(len(ids) - 1)
        spans.append((len(ids), len(ids)))
    if max_length is not None and len(ids) > max_length:
        cut = len(ids) - max_length
        ids = ids[cut:]
        positions = [max(0, p - cut) for p in positions]
        spans = [(max(0, a - cut), max(0, b - cut)) for a, b in spans]
    return RewardInput(ids, positions, spans)


def pad_right(batch_ids: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` of right-padded rows (positions stay valid)."""
    length = max(len(x) for x in batch_ids)
    ids = torch.full((len(batch_ids), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch_ids), length), dtype=torch.long)
    for r, x in enumerate(batch_ids):
        ids[r, : len(x)] = torch.tensor(x)
        mask[r, : len(x)] = 1
    return ids, mask


def score_logits(
    model, kind: str, pad_id: int, batch_ids: list[list[int]], batch_pos: list[list[int]]
):
    """Raw logits at the scored positions, per row (differentiable; training uses it too).

    Rows are right-padded, so the positions from :func:`build_reward_input` stay valid;
    the ORM's sequence head pools at the last non-pad token (the final separator).
    """
    ids, mask = pad_right(batch_ids, pad_id)
    logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits
    if kind == "prm":
        return [logits[r, pos, 0] for r, pos in enumerate(batch_pos)]
    return [logits[r, :1] for r in range(len(batch_ids))]


def likelihood_step_scores(model, pad_id: int, batch: list[RewardInput]) -> list[list[float]]:
    """Per row, per step: the probability of the least likely token from the first step
    through this one (see the module docstring). A step with no tokens scores 0."""
    ids, mask = pad_right([b.ids for b in batch], pad_id)
    logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits
    logp = torch.log_softmax(logits.float(), dim=-1).cpu()
    # written[r, t] = log p(ids[r, t] | ids[r, :t]); a row's first token has no prediction
    written = torch.full(ids.shape, float("nan"))
    written[:, 1:] = logp[:, :-1].gather(-1, ids[:, 1:, None])[..., 0]
    rows = []
    for r, b in enumerate(batch):
        running, scores = 0.0, []
        for start, end in b.spans:
            start = max(start, 1)
            running = (
                min(running, written[r, start:end].min().item()) if end > start else float("-inf")
            )
            scores.append(math.exp(running))
        rows.append(scores)
    return rows


class RewardEngine:
    """``score([RewardItem, ...])`` -> one :class:`RewardResult` per item, in order."""

    def __init__(
        self,
        model_dir: str,
        *,
        num_threads: int | None = None,
        batch_size: int = 32,
        device: str = "cpu",
    ):
        from transformers import AutoConfig, AutoTokenizer

        if num_threads:
            torch.set_num_threads(num_threads)
        self.model_dir = str(model_dir)
        config = AutoConfig.from_pretrained(model_dir)
        archs = " ".join(config.architectures or [])
        auto: Any  # the Auto class that loads this architecture
        if "CausalLM" in archs:
            from transformers import AutoModelForCausalLM as auto

            self.kind, self.scorer = "prm", "likelihood"
        elif "TokenClassification" in archs:
            from transformers import AutoModelForTokenClassification as auto

            self.kind, self.scorer = "prm", "classifier"
        elif "SequenceClassification" in archs:
            from transformers import AutoModelForSequenceClassification as auto

            self.kind, self.scorer = "orm", "classifier"
        else:
            raise ValueError(
                f"{model_dir}: architectures {config.architectures} are neither a PRM nor an ORM "
                "(expected *ForCausalLM, *ForTokenClassification or *ForSequenceClassification)"
            )
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = auto.from_pretrained(model_dir, dtype=torch.float32).to(device).eval()
        self.pad_id = self.model.config.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.pad_token_id
        self.max_length = getattr(self.model.config, "max_position_embeddings", None)
        self.batch_size = batch_size
        self._lock = threading.Lock()  # HF modules are not re-entrant

    @torch.inference_mode()
    def score(self, items: list[RewardItem]) -> list[RewardResult]:
        if not items:
            return []
        with self._lock:
            out: list[RewardResult] = []
            for i in range(0, len(items), self.batch_size):
                out += self._score_batch(items[i : i + self.batch_size])
            return out

    def _score_batch(self, items: list[RewardItem]) -> list[RewardResult]:
        built = [build_reward_input(self.tokenizer, q, r, self.max_length, f) for q, r, f in items]
        if self.scorer == "likelihood":
            rows = likelihood_step_scores(self.model, self.pad_id, built)
        else:
            logits = score_logits(
                self.model,
                self.kind,
                self.pad_id,
                [b.ids for b in built],
                [b.positions for b in built],
            )
            rows = [torch.sigmoid(row).tolist() for row in logits]
        return [RewardResult(step_scores=probs, score=probs[-1]) for probs in rows]
