"""The CPU generation engine on a tiny random-weight Llama built by the test."""

import threading

import pytest

from scaffolding_backend.engines.causal_lm import CausalLMEngine, GenerationRequest
from scaffolding_training.tiny_model import build_tiny_model


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return CausalLMEngine(str(build_tiny_model(tmp_path_factory.mktemp("tiny"))))


def test_a_rows_output_depends_on_its_seed_not_on_its_batch(engine):
    alone = engine.generate(
        [GenerationRequest("Question: 2+2?\nAnswer:\n", 12, temperature=0.9, seed=11)]
    )[0]
    batched = engine.generate(
        [
            GenerationRequest(
                "a much longer prompt than the other one", 5, temperature=0.7, seed=1
            ),
            GenerationRequest("Question: 2+2?\nAnswer:\n", 12, temperature=0.9, seed=11),
            GenerationRequest("x", 20, temperature=0.0),
        ]
    )[1]
    assert alone.text == batched.text
    assert alone.token_log_probs == pytest.approx(batched.token_log_probs, abs=1e-4)


def test_greedy_is_deterministic_and_seeds_change_samples(engine):
    greedy = [
        engine.generate([GenerationRequest("hello", 10, temperature=0.0)])[0].text for _ in range(2)
    ]
    assert greedy[0] == greedy[1]
    samples = {
        engine.generate([GenerationRequest("hello", 10, temperature=1.0, seed=s)])[0].text
        for s in range(5)
    }
    assert len(samples) > 1


def test_max_tokens_and_accounting(engine):
    result = engine.generate([GenerationRequest("hello", 7, temperature=1.0, seed=3)])[0]
    assert result.num_output_tokens <= 7
    assert len(result.token_log_probs) == result.num_output_tokens
    assert result.cum_log_prob == pytest.approx(sum(result.token_log_probs))
    assert result.num_prompt_tokens == engine.count_tokens("hello")
    if result.finish_reason == "length":
        assert result.num_output_tokens == 7


def test_stop_words_cut_the_text_before_the_stop_word(engine):
    # find a stop string the model really produces, then ask it to stop there
    free = engine.generate([GenerationRequest("hello", 30, temperature=1.0, seed=5)])[0]
    assert len(free.text) > 4
    stop = free.text[3:5]
    stopped = engine.generate(
        [GenerationRequest("hello", 30, temperature=1.0, seed=5, stop_words=[stop])]
    )[0]
    assert stopped.finish_reason == "stop_word"
    assert stopped.text == free.text[: free.text.find(stop)]
    assert stop not in stopped.text


def test_counting_tokens_in_other_threads_never_breaks_a_padded_batch(engine):
    """The fast tokenizer keeps its padding switch in shared state: counts from model
    threads during the engine's padded encoding of prompts of different lengths failed
    about one batch in ten ("Unable to create tensor ... padding=True")."""
    stop = threading.Event()

    def count():
        while not stop.is_set():
            engine.count_tokens("a question of some length")

    counters = [threading.Thread(target=count) for _ in range(2)]
    for thread in counters:
        thread.start()
    prompts = ["x" * (1 + length) for length in range(0, 40, 5)]
    try:
        for _ in range(1000):
            assert engine.encode_prompts(prompts).input_ids.shape[0] == len(prompts)
    finally:
        stop.set()
        for thread in counters:
            thread.join()
