"""The shipped models: reward engine (PRM + ORM) ranking, generator greedy answer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from scaffolding_backend.datasets.arithmetic import PROMPT_TEMPLATE, last_boxed_int
from scaffolding_backend.engines.reward_model import RewardEngine, RewardResult, build_reward_input

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
    assert prm.kind == "prm"
    assert orm.kind == "orm"


def test_prm_scores_every_step_and_ranks_correct_first(prm, example):
    good, bad = prm.score([(example.question, example.correct), (example.question, example.corrupted)])
    assert isinstance(good, RewardResult)
    assert len(good.step_scores) == 3 and len(bad.step_scores) == 3
    assert all(0.0 <= s <= 1.0 for s in good.step_scores + bad.step_scores)
    assert good.score == good.step_scores[-1]
    assert min(good.step_scores) > min(bad.step_scores)


def test_prm_partial_solution_and_batching_are_consistent(prm, example):
    partial = example.correct.split("\n\n")[0]
    alone = prm.score([(example.question, partial)])[0]
    full, _ = prm.score([(example.question, example.correct), (example.question, example.corrupted)])
    assert len(alone.step_scores) == 1
    # a step's score depends only on the text up to it, not on later steps or batch neighbours
    assert alone.step_scores[0] == pytest.approx(full.step_scores[0], abs=1e-5)


def test_orm_ranks_correct_first(orm, example):
    good, bad = orm.score([(example.question, example.correct), (example.question, example.corrupted)])
    assert len(good.step_scores) == 1 and good.score == good.step_scores[0]
    assert good.score > bad.score


def test_input_marks_the_end_of_each_step(prm, example):
    ids, positions = build_reward_input(prm.tokenizer, example.question, example.correct)
    assert len(positions) == 3 and positions[-1] == len(ids) - 1
    sep = prm.tokenizer("\n\n", add_special_tokens=False)["input_ids"]
    for p in positions:
        assert ids[p - len(sep) + 1: p + 1] == sep


def test_generator_greedy_answers_fixed_question(example):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(MODELS / "generator")
    assert tok.eos_token is not None and tok.pad_token is not None
    model = AutoModelForCausalLM.from_pretrained(MODELS / "generator").eval()
    assert model.generation_config.eos_token_id == tok.eos_token_id
    tok.padding_side = "left"
    prompts = [PROMPT_TEMPLATE.format(question=example.question), PROMPT_TEMPLATE.format(question="Tom has 5 apples. How many apples does Tom have now?")]
    enc = tok(prompts, return_tensors="pt", padding=True)
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=120, do_sample=False)
    text = tok.decode(out[0, enc.input_ids.shape[1]:], skip_special_tokens=True)
    assert last_boxed_int(text) == example.answer, text
