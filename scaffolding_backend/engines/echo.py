"""An engine that computes nothing: every request gets the same completion after a fixed
delay.

Served by the ``generator`` model (its setting ``engine: "echo"``), it leaves only Triton,
the Python backend and this project's code on a request's path, so their cost can be
measured on its own: ``scaffolding-bench bls`` compares the sub-requests per second that
flow through ``scaffolding`` with the requests per second a load generator gets sending
straight to the generator. It keeps the contract's behaviour that callers rely on: the
completion is cut at ``max_tokens`` and at a stop word, streamed word by word when asked,
and a cancelled request ends at once with ``cancelled``.
"""

from __future__ import annotations

import heapq
import itertools
import re
import threading
import time

from .generation import (
    EngineStats,
    FinishCallback,
    Generation,
    GenerationRequest,
    GenerationResult,
    TokenCallback,
)


def _words(text: str) -> list[str]:
    """The completion's "tokens": each word with the whitespace before it."""
    return re.findall(r"\s*\S+", text)


class _EchoGeneration(Generation):
    def __init__(self, engine: EchoEngine, *args) -> None:
        super().__init__(*args)
        self.engine = engine

    def cancel(self) -> None:
        super().cancel()
        self.engine._finish(self)  # nothing to interrupt: it ends now


class EchoEngine:
    def __init__(self, completion: str, delay_s: float = 0.0):
        self.words = _words(completion)
        self.delay_s = delay_s
        self.max_context: int | None = None
        self.stats = EngineStats()
        self._stats_lock = threading.Lock()
        self._due: list[tuple[float, int, _EchoGeneration]] = []  # a heap, by due time
        self._order = itertools.count()  # ties in due time keep their order
        self._condition = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None

    def count_tokens(self, text: str) -> int:
        return len(_words(text))

    def submit(
        self,
        request: GenerationRequest,
        on_token: TokenCallback | None = None,
        on_finish: FinishCallback | None = None,
    ) -> Generation:
        generation = _EchoGeneration(self, request, on_token, on_finish)
        with self._condition:
            if self._closed:
                raise RuntimeError("the engine is closed")
            if self.delay_s > 0:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._loop, name="echo", daemon=True)
                    self._thread.start()
                due = time.monotonic() + self.delay_s
                heapq.heappush(self._due, (due, next(self._order), generation))
                self._condition.notify()
                return generation
        self._finish(generation)
        return generation

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify()
        if self._thread is not None:
            self._thread.join()
        for _, _, generation in self._due:
            generation.cancel()

    def _loop(self) -> None:
        while True:
            with self._condition:
                while not self._closed and (not self._due or self._due[0][0] > time.monotonic()):
                    timeout = self._due[0][0] - time.monotonic() if self._due else None
                    self._condition.wait(timeout)
                if self._closed:
                    return
                _, _, generation = heapq.heappop(self._due)
            self._finish(generation)

    def _finish(self, generation: _EchoGeneration) -> None:
        """Write the completion (or nothing, if cancelled) and hand over the result, once."""
        request = generation.request
        with generation.writing:
            if generation.result is not None:
                return
            if generation.cancelled:
                words, reason = [], "cancelled"
            elif request.max_tokens < len(self.words):
                words, reason = self.words[: request.max_tokens], "length"
            else:
                words, reason = self.words, "eos"
            text = "".join(words)
            hits = [text.find(word) for word in request.stop_words if word and word in text]
            if hits:
                text, reason = text[: min(hits)], "stop_word"
                words = _words(text)
            if generation.on_token is not None:
                for word in words:
                    generation.on_token(word, 0.0)
            generation.result = GenerationResult(
                text=text,
                num_prompt_tokens=self.count_tokens(request.prompt),
                num_output_tokens=len(words),
                cum_log_prob=0.0,
                token_log_probs=[0.0] * len(words),
                finish_reason=reason,
            )
        with self._stats_lock:
            self.stats.generations += 1
            self.stats.tokens += len(words)
            self.stats.cancelled += reason == "cancelled"
        generation.done.set()
        if generation.on_finish is not None:
            generation.on_finish(generation.result)
