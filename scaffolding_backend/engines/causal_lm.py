"""CPU generation engine over a local Hugging Face causal-LM directory.

One call to :meth:`CausalLMEngine.generate` decodes a whole batch together with a
shared KV cache, yet every row keeps its own sampling parameters and its own
random generator, so a request's output depends only on its seed, never on
which other requests happened to share its batch. Finished rows leave the
batch at once, so a short request does not pay for a long neighbour.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache


@dataclass
class GenerationRequest:
    prompt: str
    max_tokens: int
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 means no top-k filter
    seed: int | None = None
    stop_words: list[str] = field(default_factory=list)


@dataclass
class GenerationResult:
    text: str
    num_prompt_tokens: int
    num_output_tokens: int
    cum_log_prob: float
    token_log_probs: list[float]
    finish_reason: str  # "eos", "stop_word" or "length"


def _filtered_logits(
    logits: torch.Tensor, temperature: float, top_k: int, top_p: float
) -> torch.Tensor:
    logits = logits / temperature
    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
        # keep the smallest prefix whose mass reaches top_p (the first token always stays)
        drop_sorted = cumulative - torch.softmax(sorted_logits, dim=-1) >= top_p
        logits = logits.masked_fill(drop_sorted.scatter(0, order, drop_sorted), float("-inf"))
    return logits


class _Row:
    """Decoding state of one request inside a batch."""

    def __init__(self, request: GenerationRequest, num_prompt_tokens: int):
        self.request = request
        self.num_prompt_tokens = num_prompt_tokens
        self.token_ids: list[int] = []
        self.log_probs: list[float] = []
        self.finish_reason: str | None = None
        self.stop_text_end: int | None = None
        self.generator = torch.Generator()
        self.generator.manual_seed(request.seed if request.seed is not None else torch.seed())


class CausalLMEngine:
    def __init__(self, model_dir: str, *, num_threads: int | None = None):
        if num_threads:
            torch.set_num_threads(num_threads)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        self.model.eval()
        self.eos_token_ids = self._eos_token_ids()
        self.max_context = getattr(self.model.config, "max_position_embeddings", None)
        # HF modules are not re-entrant; callers from several threads queue here.
        self._lock = threading.Lock()

    def _eos_token_ids(self) -> set[int]:
        ids = self.model.generation_config.eos_token_id
        if ids is None:
            ids = self.tokenizer.eos_token_id
        return set(ids if isinstance(ids, list) else [ids])

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False).input_ids)

    @torch.inference_mode()
    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        if not requests:
            return []
        with self._lock:
            return self._generate(requests)

    def _generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        encoded = self.tokenizer([r.prompt for r in requests], return_tensors="pt", padding=True)
        input_ids, attention_mask = encoded.input_ids, encoded.attention_mask
        rows = [_Row(r, int(n)) for r, n in zip(requests, attention_mask.sum(dim=1))]
        active = list(range(len(rows)))  # row index of each batch position
        cache = DynamicCache()
        step_input = input_ids
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        while active:
            out = self.model(
                input_ids=step_input,
                attention_mask=attention_mask,
                position_ids=position_ids,
                cache=cache,
                use_cache=True,
                logits_to_keep=1,
            )
            logits = out.logits[:, -1, :].float()
            log_probs = torch.log_softmax(logits, dim=-1)
            next_tokens = []
            for position, row_index in enumerate(active):
                token = self._sample(rows[row_index], logits[position])
                next_tokens.append(token)
                self._append(rows[row_index], token, float(log_probs[position, token]))
            keep = [p for p, i in enumerate(active) if rows[i].finish_reason is None]
            if not keep:
                break
            if len(keep) < len(active):
                index = torch.tensor(keep)
                cache.batch_select_indices(index)
                attention_mask = attention_mask[index]
                position_ids = position_ids[index]
                next_tokens = [next_tokens[p] for p in keep]
                active = [active[p] for p in keep]
            step_input = torch.tensor(next_tokens).unsqueeze(1)
            attention_mask = torch.cat(
                [attention_mask, torch.ones(len(active), 1, dtype=attention_mask.dtype)], dim=1
            )
            position_ids = position_ids[:, -1:] + 1
        return [self._result(row) for row in rows]

    @staticmethod
    def _sample(row: _Row, logits: torch.Tensor) -> int:
        request = row.request
        # a temperature so small that the scaled logits overflow is sampling at its limit
        # as the temperature goes to 0: greedy (rather than NaN probabilities)
        scaled = logits / request.temperature if request.temperature > 0 else None
        if scaled is None or not bool(torch.isfinite(scaled).all()):
            return int(torch.argmax(logits))
        probs = torch.softmax(_filtered_logits(scaled, 1.0, request.top_k, request.top_p), dim=-1)
        return int(torch.multinomial(probs, 1, generator=row.generator))

    def _append(self, row: _Row, token: int, log_prob: float) -> None:
        if token in self.eos_token_ids:
            row.finish_reason = "eos"
            return
        row.token_ids.append(token)
        row.log_probs.append(log_prob)
        if row.request.stop_words:
            text = str(self.tokenizer.decode(row.token_ids, skip_special_tokens=True))
            hits = [text.find(w) for w in row.request.stop_words if w and w in text]
            if hits:
                row.finish_reason = "stop_word"
                row.stop_text_end = min(hits)
                return
        written = len(row.token_ids)
        if written >= row.request.max_tokens or (
            self.max_context and row.num_prompt_tokens + written >= self.max_context
        ):
            row.finish_reason = "length"

    def _result(self, row: _Row) -> GenerationResult:
        text = str(self.tokenizer.decode(row.token_ids, skip_special_tokens=True))
        if row.stop_text_end is not None:
            text = text[: row.stop_text_end]
        return GenerationResult(
            text=text,
            num_prompt_tokens=row.num_prompt_tokens,
            num_output_tokens=len(row.token_ids),
            cum_log_prob=float(sum(row.log_probs)),
            token_log_probs=row.log_probs,
            finish_reason=row.finish_reason or "length",
        )
