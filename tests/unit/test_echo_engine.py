"""The echo engine keeps the generation contract's behaviour callers rely on, without a model."""

import threading
import time

from scaffolding_backend.engines.echo import EchoEngine
from scaffolding_backend.engines.generation import GenerationRequest

COMPLETION = "Mia has 3 + 4 = 7 eggs.\n\nThe answer is \\boxed{7}."


def test_every_request_gets_the_completion_cut_at_max_tokens_and_stop_words():
    engine = EchoEngine(COMPLETION)
    whole, short, stopped = (
        engine.submit(request).wait(1)
        for request in (
            GenerationRequest("Question: a b c\nAnswer:\n", max_tokens=64),
            GenerationRequest("q", max_tokens=3),
            GenerationRequest("q", max_tokens=64, stop_words=["\n\n"]),
        )
    )
    assert (whole.text, whole.finish_reason, whole.num_output_tokens) == (COMPLETION, "eos", 12)
    assert whole.num_prompt_tokens == 5
    assert whole.token_log_probs == [0.0] * 12
    assert (short.text, short.finish_reason, short.num_output_tokens) == ("Mia has 3", "length", 3)
    assert (stopped.text, stopped.finish_reason) == ("Mia has 3 + 4 = 7 eggs.", "stop_word")
    assert engine.stats.generations == 3
    assert engine.stats.tokens == 12 + 3 + 8


def test_streaming_hands_over_the_completion_word_by_word():
    engine = EchoEngine(COMPLETION)
    pieces: list[str] = []
    generation = engine.submit(
        GenerationRequest("q", max_tokens=64), on_token=lambda text, _: pieces.append(text)
    )
    assert "".join(pieces) == generation.wait(1).text == COMPLETION
    assert len(pieces) == 12


def test_the_delay_is_kept_and_a_cancel_ends_a_request_at_once():
    engine = EchoEngine(COMPLETION, delay_s=0.3)
    finished = threading.Event()
    started = time.monotonic()
    waiting = engine.submit(
        GenerationRequest("q", max_tokens=64), on_finish=lambda _: finished.set()
    )
    cancelled = engine.submit(GenerationRequest("q", max_tokens=64))
    cancelled.cancel()
    result = cancelled.wait(0.1)
    assert (result.text, result.finish_reason, result.num_output_tokens) == ("", "cancelled", 0)
    assert not finished.is_set()
    assert waiting.wait(2).finish_reason == "eos"
    assert time.monotonic() - started >= 0.3
    assert engine.stats.cancelled == 1
    assert engine.stats.tokens_after_cancel == 0
    engine.close()


def test_close_ends_what_is_waiting():
    engine = EchoEngine(COMPLETION, delay_s=60)
    generation = engine.submit(GenerationRequest("q", max_tokens=64))
    engine.close()
    assert generation.wait(1).finish_reason == "cancelled"
