"""models/reasoner: the generator fine-tuned to check its answer (what dynasor_cot cuts
short), and the training options that make it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from scaffolding_backend.engines.causal_lm import CausalLMEngine
from scaffolding_backend.engines.generation import GenerationRequest
from scaffolding_backend.kernel.prompts import PromptFormat
from scaffolding_training.arithmetic import last_boxed_int, read_jsonl

ROOT = Path(__file__).resolve().parents[2]


def test_the_reasoner_checks_its_answer_and_says_it_when_probed_part_way():
    engine = CausalLMEngine(str(ROOT / "models" / "reasoner"))
    question = read_jsonl(ROOT / "data" / "test.jsonl")[1]
    prompt = PromptFormat().prompt(question["question"])
    chain = engine.generate([GenerationRequest(prompt, 256, temperature=0.0)])[0].text
    answer_line, _, check = chain.partition("\n\nCheck: before that,")
    assert check, chain  # it goes on after its answer
    assert last_boxed_int(answer_line) == last_boxed_int(chain) == int(question["answer"])
    # probed after the first check step, it gives its answer, not the number it last wrote
    first_check = chain[: chain.index(".", len(answer_line) + 2) + 1]
    probe = prompt + first_check + " The answer is \\boxed{"
    said = engine.generate([GenerationRequest(probe, 8, temperature=0.0, stop_words=["}"])])[0]
    assert said.text.split("}")[0] == question["answer"], first_check


def test_train_generator_fine_tunes_a_model_on_checked_solutions(tmp_path):
    out = tmp_path / "reasoner"
    command = [sys.executable, "-m", "scaffolding_training.train_generator"]
    command += ["--init-from", str(ROOT / "models" / "generator"), "--out", str(out)]
    command += ["--check-fraction", "1", "--answer-during-check", "0.25"]
    command += ["--program-fraction", "0", "--n-train", "40", "--steps", "2", "--stop-after", "0"]
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True, timeout=300)
    info = json.loads((out / "training_info.json").read_text())
    assert info["steps_done"] == 2 and info["params"] == 929_920  # the generator's weights
    shipped = json.loads((ROOT / "models" / "generator" / "tokenizer.json").read_text())
    assert json.loads((out / "tokenizer.json").read_text())["model"] == shipped["model"]
