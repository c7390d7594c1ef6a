"""CPU generation engine over a local Hugging Face causal-LM directory, with in-flight
(continuous) batching.

One thread runs the decode loop. A request joins the running batch between two decode
steps (its prompt is prefilled on its own and its KV cache merged into the batch's) and
leaves as soon as it finishes or is cancelled, so a request that arrives mid-batch does
not wait for the batch to finish, and a short request does not pay for a long neighbour.
Every row keeps its own sampling parameters and its own random generator, so a request's
output depends only on its seed, never on which requests shared its steps. Each new token
can be handed to a callback as it is written (streaming), with its log-probability.

Why not transformers' own continuous batching: it applies one generation config to the
whole batch (no per-request temperature, top-p, top-k or seed) and has no stop words,
which the step-wise methods and replayable requests need.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

from .generation import (
    EngineStats,
    FinishCallback,
    Generation,
    GenerationRequest,
    GenerationResult,
    TokenCallback,
)


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


def _attention_layers(cache: DynamicCache) -> list[Any]:
    """The cache's per-layer key and value stores (``keys``, ``values``: [batch, heads,
    tokens, dim])."""
    return list(cache.layers)


class _Row:
    """Decoding state of one request inside the batch."""

    def __init__(self, generation: Generation, num_prompt_tokens: int):
        self.generation = generation
        self.request = generation.request
        self.num_prompt_tokens = num_prompt_tokens
        self.length = num_prompt_tokens  # tokens in its KV cache (the next position)
        self.pending: int | None = None  # the last token written, fed at the next step
        self.token_ids: list[int] = []
        self.log_probs: list[float] = []
        self.finish_reason: str | None = None
        self.error: str | None = None
        self.stop_text_end: int | None = None
        self.streamed = ""  # text handed to on_token so far
        self.generator = torch.Generator()
        seed = self.request.seed
        self.generator.manual_seed(seed if seed is not None else torch.seed())


class CausalLMEngine:
    def __init__(self, model_dir: str, *, num_threads: int | None = None, max_batch_rows: int = 64):
        if num_threads:
            torch.set_num_threads(num_threads)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        # a fast tokenizer keeps its padding switch in shared state that every call sets:
        # a count in a model thread during the engine's padded encoding broke the batch
        self._tokenizer_lock = threading.Lock()
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        self.model.eval()
        self.eos_token_ids = self._eos_token_ids()
        self.max_context = getattr(self.model.config, "max_position_embeddings", None)
        self.max_batch_rows = max_batch_rows
        self.stats = EngineStats()
        self._waiting: deque[Generation] = deque()
        self._condition = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        # the running batch: its rows, their KV cache and attention mask (left-padded)
        self._rows: list[_Row] = []
        self._cache: DynamicCache | None = None
        self._mask: torch.Tensor | None = None

    def _eos_token_ids(self) -> set[int]:
        ids = self.model.generation_config.eos_token_id
        if ids is None:
            ids = self.tokenizer.eos_token_id
        return set(ids if isinstance(ids, list) else [ids])

    def count_tokens(self, text: str) -> int:
        with self._tokenizer_lock:
            return len(self.tokenizer(text, add_special_tokens=False).input_ids)

    def encode_prompts(self, prompts: list[str]) -> Any:
        """The prompts as one left-padded batch (``input_ids``, ``attention_mask``)."""
        with self._tokenizer_lock:
            return self.tokenizer(prompts, return_tensors="pt", padding=True)

    # -- the interface ----------------------------------------------------------------------

    def submit(
        self,
        request: GenerationRequest,
        on_token: TokenCallback | None = None,
        on_finish: FinishCallback | None = None,
    ) -> Generation:
        """Queue a request; it joins the batch at the next decode step (thread-safe)."""
        generation = Generation(request, on_token, on_finish)
        with self._condition:
            if self._closed:
                raise RuntimeError("the engine is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="decode-loop", daemon=True)
                self._thread.start()
            self._waiting.append(generation)
            self._condition.notify()
        return generation

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        """Every request through the engine at once; their results, in order."""
        generations = [self.submit(request) for request in requests]
        return [generation.wait() for generation in generations]

    def close(self) -> None:
        """Stop the decode loop; waiting and running requests end cancelled."""
        with self._condition:
            self._closed = True
            self._condition.notify()
        if self._thread is not None:
            self._thread.join()

    # -- the decode loop ----------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._condition:
                while not self._closed and not self._waiting and not self._rows:
                    self._condition.wait()
                if self._closed:
                    leaving = [*self._waiting]
                    self._waiting.clear()
                    break
                room = self.max_batch_rows - len(self._rows)
                joining = [self._waiting.popleft() for _ in range(min(room, len(self._waiting)))]
            with torch.inference_mode():
                self._step(joining)
        for generation in leaving:
            generation.cancel()
        for row in self._rows:
            row.generation.cancel()
            row.finish_reason = "cancelled"
        self._retire(list(range(len(self._rows))))
        for generation in leaving:
            self._finish(_Row(generation, 0), "cancelled")

    def _step(self, joining: list[Generation]) -> None:
        """Prefill the joining requests into the batch, then one decode step for every row."""
        joining = [g for g in joining if not self._dropped_before_start(g)]
        if joining:
            try:
                self._prefill(joining)
            except Exception as error:  # these prompts failed together: each fails alone
                for generation in joining:
                    if not generation.done.is_set():
                        row = _Row(generation, 0)
                        row.error = f"{error}"
                        self._finish(row, "error")
        if not self._rows:
            return
        try:
            self._decode()
        except Exception as error:  # the batch's forward pass failed: every row gets the error
            for row in self._rows:
                row.finish_reason, row.error = "error", f"{error}"
            self._retire(list(range(len(self._rows))))

    def _decode(self) -> None:
        rows = self._rows
        assert self._cache is not None and self._mask is not None
        tokens = torch.tensor([[row.pending] for row in rows])
        self._mask = torch.cat(
            [self._mask, torch.ones(len(rows), 1, dtype=self._mask.dtype)], dim=1
        )
        positions = torch.tensor([[row.length] for row in rows])
        out = self.model(
            input_ids=tokens,
            attention_mask=self._mask,
            position_ids=positions,
            cache=self._cache,
            use_cache=True,
            logits_to_keep=1,
        )
        self.stats.steps += 1
        for row in rows:
            row.length += 1
        self._write(rows, out.logits[:, -1, :].float())
        self._retire([index for index, row in enumerate(rows) if row.finish_reason is not None])

    def _dropped_before_start(self, generation: Generation) -> bool:
        if not generation.cancelled:
            return False
        self._finish(_Row(generation, 0), "cancelled")
        return True

    def _prefill(self, joining: list[Generation]) -> None:
        encoded = self.encode_prompts([g.request.prompt for g in joining])
        mask = encoded.attention_mask
        cache = DynamicCache()
        out = self.model(
            input_ids=encoded.input_ids,
            attention_mask=mask,
            position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        rows = [_Row(g, int(n)) for g, n in zip(joining, mask.sum(dim=1))]
        self._write(rows, out.logits[:, -1, :].float())
        alive = [index for index, row in enumerate(rows) if row.finish_reason is None]
        for row in rows:
            if row.finish_reason is not None:
                self._finish(row, row.finish_reason)
        if alive:
            if len(alive) < len(rows):
                selected = torch.tensor(alive)
                cache.batch_select_indices(selected)
                mask = mask[selected]
            self._merge([rows[index] for index in alive], cache, mask)

    def _merge(self, rows: list[_Row], cache: DynamicCache, mask: torch.Tensor) -> None:
        """Join rows (with their cache and mask) to the running batch, left-padding the
        shorter side so that every row's cache ends at the same column."""
        if self._cache is None or self._mask is None or not self._rows:
            self._rows, self._cache, self._mask = rows, cache, mask
            return
        width = max(self._mask.shape[1], mask.shape[1])

        def pad(tensor: torch.Tensor, dim: int) -> torch.Tensor:
            missing = width - tensor.shape[dim]
            if missing == 0:
                return tensor
            shape = list(tensor.shape)
            shape[dim] = missing
            return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)

        for ours, theirs in zip(_attention_layers(self._cache), _attention_layers(cache)):
            ours.keys = torch.cat([pad(ours.keys, 2), pad(theirs.keys, 2)], dim=0)
            ours.values = torch.cat([pad(ours.values, 2), pad(theirs.values, 2)], dim=0)
        self._mask = torch.cat([pad(self._mask, 1), pad(mask, 1)], dim=0)
        self._rows = self._rows + rows

    def _write(self, rows: list[_Row], logits: torch.Tensor) -> None:
        """Sample and append each row's next token; a row that fails fails alone."""
        log_probs = torch.log_softmax(logits, dim=-1)
        for position, row in enumerate(rows):
            with row.generation.writing:
                if row.generation.cancelled:
                    row.finish_reason = "cancelled"
                    continue
                try:
                    token = self._sample(row, logits[position])
                    self._append(row, token, float(log_probs[position, token]))
                except Exception as error:
                    row.finish_reason, row.error = "error", f"{error}"

    def _retire(self, indexes: list[int]) -> None:
        """Remove finished rows from the batch, and the padding no row needs any more."""
        if not indexes:
            return
        leaving = set(indexes)
        for index in indexes:
            row = self._rows[index]
            self._finish(row, row.finish_reason or "length")
        keep = [index for index in range(len(self._rows)) if index not in leaving]
        if not keep:
            self._rows, self._cache, self._mask = [], None, None
            return
        assert self._cache is not None and self._mask is not None
        selected = torch.tensor(keep)
        self._cache.batch_select_indices(selected)
        self._mask = self._mask[selected]
        self._rows = [self._rows[index] for index in keep]
        unused = int(
            (self._mask.cumsum(dim=1) == 0).all(dim=0).sum()
        )  # leading all-padding columns
        if unused:
            for layer in _attention_layers(self._cache):
                layer.keys = layer.keys[:, :, unused:]
                layer.values = layer.values[:, :, unused:]
            self._mask = self._mask[:, unused:]

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
        row.pending = token
        self.stats.tokens += 1
        if row.generation.cancelled:
            self.stats.tokens_after_cancel += 1
        if row.request.stop_words or row.generation.on_token is not None:
            text = str(self.tokenizer.decode(row.token_ids, skip_special_tokens=True))
            if row.generation.on_token is not None and not text.endswith("\ufffd"):
                # a character split over tokens waits for its last byte
                row.generation.on_token(text[len(row.streamed) :], log_prob)
                row.streamed = text
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

    def _finish(self, row: _Row, reason: str) -> None:
        text = str(self.tokenizer.decode(row.token_ids, skip_special_tokens=True))
        if row.stop_text_end is not None:
            text = text[: row.stop_text_end]
        result = GenerationResult(
            text=text,
            num_prompt_tokens=row.num_prompt_tokens,
            num_output_tokens=len(row.token_ids),
            cum_log_prob=float(sum(row.log_probs)),
            token_log_probs=row.log_probs,
            finish_reason=reason,
            error=row.error,
        )
        self.stats.generations += 1
        self.stats.cancelled += reason == "cancelled"
        generation = row.generation
        generation.result = result
        generation.done.set()
        if generation.on_finish is not None:
            generation.on_finish(result)
