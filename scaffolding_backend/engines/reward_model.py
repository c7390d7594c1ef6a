"""CPU reward engine behind Triton's ``reward`` model: a process (PRM) or outcome (ORM) reward model.

The model directory decides the kind from its saved config:

* ``LlamaForTokenClassification`` -> PRM: one logit per token; the probability that a
  step is correct is read at the step separator that closes the step.
* ``LlamaForSequenceClassification`` -> ORM: one logit for the whole response, read at
  its last token.

Both see exactly the input built by :func:`build_reward_input` (the one the
training script ``tools/train_reward.py`` uses): the generator's prompt template,
then every step followed by the step separator ``"\\n\\n"``, each piece tokenized on
its own so that step boundaries are exact token positions.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.prompts import PromptFormat

# the format the shipped reward models were trained on (the generator's prompt)
PROMPT_FORMAT = PromptFormat()


@dataclass
class RewardResult:
    step_scores: list[float]
    score: float


def build_reward_input(tokenizer, query: str, response: str, max_length: int | None = None) -> tuple[list[int], list[int]]:
    """Token ids of (prompt + response) and the position of each step's closing separator.

    A response with no step text still gets one position (the end of the prompt), so
    every input yields at least one score. With ``max_length`` the prompt is cut from
    the left when needed (steps are kept).
    """
    enc = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    ids = enc(PROMPT_FORMAT.prompt(query))
    sep = enc(PROMPT_FORMAT.step_delimiter)
    positions: list[int] = []
    for step in PROMPT_FORMAT.split_steps(response):
        ids = ids + enc(step) + sep
        positions.append(len(ids) - 1)
    if not positions:
        positions.append(len(ids) - 1)
    if max_length is not None and len(ids) > max_length:
        cut = len(ids) - max_length
        ids = ids[cut:]
        positions = [max(0, p - cut) for p in positions]
    return ids, positions


def pad_right(batch_ids: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` of right-padded rows (positions stay valid)."""
    length = max(len(x) for x in batch_ids)
    ids = torch.full((len(batch_ids), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch_ids), length), dtype=torch.long)
    for r, x in enumerate(batch_ids):
        ids[r, : len(x)] = torch.tensor(x)
        mask[r, : len(x)] = 1
    return ids, mask


def score_logits(model, kind: str, pad_id: int, batch_ids: list[list[int]], batch_pos: list[list[int]]):
    """Raw logits at the scored positions, per row (differentiable; training uses it too).

    Rows are right-padded, so the positions from :func:`build_reward_input` stay valid;
    the ORM's sequence head pools at the last non-pad token (the final separator).
    """
    ids, mask = pad_right(batch_ids, pad_id)
    logits = model(input_ids=ids, attention_mask=mask).logits
    if kind == "prm":
        return [logits[r, pos, 0] for r, pos in enumerate(batch_pos)]
    return [logits[r, :1] for r in range(len(batch_ids))]


class RewardEngine:
    """``score([(query, response), ...])`` -> one :class:`RewardResult` per pair, in order."""

    def __init__(self, model_dir: str, *, num_threads: int | None = None, batch_size: int = 32):
        from transformers import AutoConfig, AutoTokenizer

        if num_threads:
            torch.set_num_threads(num_threads)
        self.model_dir = str(model_dir)
        config = AutoConfig.from_pretrained(model_dir)
        archs = " ".join(config.architectures or [])
        if "TokenClassification" in archs:
            from transformers import AutoModelForTokenClassification as Auto

            self.kind = "prm"
        elif "SequenceClassification" in archs:
            from transformers import AutoModelForSequenceClassification as Auto

            self.kind = "orm"
        else:
            raise ValueError(f"{model_dir}: architectures {config.architectures} are neither a PRM nor an ORM")
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = Auto.from_pretrained(model_dir, dtype=torch.float32).eval()
        self.pad_id = self.model.config.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.pad_token_id
        self.max_length = getattr(self.model.config, "max_position_embeddings", None)
        self.batch_size = batch_size
        info = Path(model_dir) / "reward_info.json"
        self.info = json.loads(info.read_text()) if info.exists() else {}
        self._lock = threading.Lock()  # HF modules are not re-entrant

    @torch.inference_mode()
    def score(self, items: list[tuple[str, str]]) -> list[RewardResult]:
        if not items:
            return []
        with self._lock:
            out: list[RewardResult] = []
            for i in range(0, len(items), self.batch_size):
                out += self._score_batch(items[i:i + self.batch_size])
            return out

    def _score_batch(self, items: list[tuple[str, str]]) -> list[RewardResult]:
        built = [build_reward_input(self.tokenizer, q, r, self.max_length) for q, r in items]
        logits = score_logits(self.model, self.kind, self.pad_id, [b[0] for b in built], [b[1] for b in built])
        results = []
        for row in logits:
            probs = torch.sigmoid(row).tolist()
            results.append(RewardResult(step_scores=probs, score=probs[-1]))
        return results
