"""The shipped models: reward engine (PRM + ORM) ranking, generator greedy answer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from scaffolding_backend.engines.reward_model import (
    RewardEngine,
    RewardItem,
    RewardResult,
    build_reward_input,
)
from scaffolding_training.arithmetic import PROMPT_TEMPLATE, last_boxed_int

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"


@pytest.fixture(scope="module")
def example(shipped_example):
    return shipped_example


@pytest.fixture(scope="module")
def prm():
    return RewardEngine(str(MODELS / "prm"), num_threads=2)


@pytest.fixture(scope="module")
def orm():
    return RewardEngine(str(MODELS / "orm"), num_threads=2)


def test_kinds_are_detected(prm, orm):
    assert (prm.kind, prm.scorer) == ("prm", "likelihood")
    assert (orm.kind, orm.scorer) == ("orm", "classifier")


def test_prm_scores_every_step_and_ranks_correct_first(prm, example):
    good, bad = prm.score(
        [
            RewardItem(example.question, example.correct),
            RewardItem(example.question, example.corrupted),
        ]
    )
    assert isinstance(good, RewardResult)
    assert len(good.step_scores) == 3 and len(bad.step_scores) == 3
    assert all(0.0 <= s <= 1.0 for s in good.step_scores + bad.step_scores)
    assert good.score == good.step_scores[-1]
    assert min(good.step_scores) > min(bad.step_scores)


def test_prm_partial_solution_and_batching_are_consistent(prm, example):
    partial = example.correct.split("\n\n")[0]
    alone = prm.score([RewardItem(example.question, partial)])[0]
    full, _ = prm.score(
        [
            RewardItem(example.question, example.correct),
            RewardItem(example.question, example.corrupted),
        ]
    )
    assert len(alone.step_scores) == 1
    # a step's score depends only on the text up to it, not on later steps or batch neighbours
    assert alone.step_scores[0] == pytest.approx(full.step_scores[0], abs=1e-5)


# each variant of the example's correct solution slips one written digit
SLIPS = {
    "tens digit of a result": ("= 43", "= 53"),
    "last digit of a result": ("= 43", "= 45"),
    "boxed copy of the answer": ("\\boxed{24}", "\\boxed{26}"),
}


@pytest.mark.parametrize("slip", SLIPS)
def test_likelihood_prm_doubts_every_step_from_a_slip_on(prm, example, slip):
    old, new = SLIPS[slip]
    slipped = example.correct.replace(old, new, 1)
    assert slipped != example.correct
    good, bad = prm.score(
        [RewardItem(example.question, example.correct), RewardItem(example.question, slipped)]
    )
    first_bad = next(i for i, step in enumerate(slipped.split("\n\n")) if new in step)
    assert bad.step_scores[:first_bad] == pytest.approx(good.step_scores[:first_bad], abs=1e-5)
    # a step's score is the least likely token so far: it never rises, and the slip sinks it
    assert all(a >= b for a, b in zip(bad.step_scores, bad.step_scores[1:]))
    assert max(bad.step_scores[first_bad:]) < 0.1 * min(good.step_scores)


def test_likelihood_prm_gives_an_empty_response_zero(prm, example):
    (result,) = prm.score([RewardItem(example.question, "  ")])
    assert result.step_scores == [0.0] and result.score == 0.0


def test_classifier_prm_reads_each_step_separator(tmp_path, example):
    from transformers import AutoConfig, LlamaForTokenClassification

    from scaffolding_training.tiny_model import build_tiny_model

    tiny = build_tiny_model(tmp_path / "lm")
    config = AutoConfig.from_pretrained(tiny)
    config.num_labels = 1
    config.architectures = None
    torch.manual_seed(0)
    LlamaForTokenClassification(config).save_pretrained(tmp_path / "prm")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / "prm" / name).write_bytes((tiny / name).read_bytes())
    engine = RewardEngine(str(tmp_path / "prm"), num_threads=1)
    assert (engine.kind, engine.scorer) == ("prm", "classifier")
    full, partial = engine.score(
        [
            RewardItem(example.question, example.correct),
            RewardItem(example.question, example.correct.split("\n\n")[0]),
        ]
    )
    assert len(full.step_scores) == 3 and all(0.0 < s < 1.0 for s in full.step_scores)
    assert partial.step_scores[0] == pytest.approx(full.step_scores[0], abs=1e-5)


def test_orm_ranks_correct_first(orm, example):
    good, bad = orm.score(
        [
            RewardItem(example.question, example.correct),
            RewardItem(example.question, example.corrupted),
        ]
    )
    assert len(good.step_scores) == 1 and good.score == good.step_scores[0]
    assert good.score > bad.score


def test_input_marks_the_end_of_each_step(prm, example):
    ids, positions, spans = build_reward_input(prm.tokenizer, example.question, example.correct)
    assert len(positions) == len(spans) == 3 and positions[-1] == len(ids) - 1
    sep = prm.tokenizer("\n\n", add_special_tokens=False)["input_ids"]
    for p, (start, end), step in zip(positions, spans, example.correct.split("\n\n")):
        assert ids[p - len(sep) + 1 : p + 1] == sep and end == p - len(sep) + 1
        assert prm.tokenizer.decode(ids[start:end]) == step


def test_generator_greedy_answers_fixed_question(example):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(MODELS / "generator")
    assert tok.eos_token is not None and tok.pad_token is not None
    model = AutoModelForCausalLM.from_pretrained(MODELS / "generator").eval()
    assert model.generation_config.eos_token_id == tok.eos_token_id
    tok.padding_side = "left"
    prompts = [
        PROMPT_TEMPLATE.format(question=example.question),
        PROMPT_TEMPLATE.format(question="Tom has 5 apples. How many apples does Tom have now?"),
    ]
    enc = tok(prompts, return_tensors="pt", padding=True)
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=120, do_sample=False)
    text = tok.decode(out[0, enc.input_ids.shape[1] :], skip_special_tokens=True)
    assert last_boxed_int(text) == example.answer, text
