"""The arithmetic task family: splits, shipped files, step checker, program-aided form."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from scaffolding_training.arithmetic import (
    PROGRAM_PROMPT_TEMPLATE,
    PROMPT_TEMPLATE,
    SHIPPED_SIZES,
    check_steps,
    generate_problem,
    is_correct,
    last_boxed_int,
    make_split,
    read_jsonl,
    result_digit_labels,
    run_program,
    slip_result,
    split_overlap,
    split_steps,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def train_sample():
    # the generator samples its training data from the first 60k train questions; a large
    # prefix catches leakage
    return make_split("train", 30_000)


def test_prompt_templates_are_fixed():
    assert PROMPT_TEMPLATE == "Question: {question}\nAnswer:\n"
    assert PROGRAM_PROMPT_TEMPLATE == "Question: {question}\nProgram:\n"


def test_splits_are_deterministic():
    a = make_split("test", 20)
    b = make_split("test", 20)
    assert [p.question for p in a] == [p.question for p in b]
    assert make_split("dev", 5)[0].question != a[0].question


def test_shipped_files_match_the_generator():
    for name, n in SHIPPED_SIZES.items():
        rows = read_jsonl(ROOT / "data" / f"{name}.jsonl")
        assert len(rows) == n
        assert [r["question"] for r in rows] == [p.question for p in make_split(name, n)]
        assert all(
            set(r) == {"question", "answer", "solution"} and r["answer"].isdigit() for r in rows
        )
    assert len(read_jsonl(ROOT / "data" / "test.jsonl")) >= 300


def test_no_test_or_dev_question_in_train(train_sample):
    test = read_jsonl(ROOT / "data" / "test.jsonl")
    dev = read_jsonl(ROOT / "data" / "dev.jsonl")
    assert split_overlap(train_sample, test) == set()
    assert split_overlap(train_sample, dev) == set()
    assert split_overlap(test, dev) == set()
    assert len({p.question for p in train_sample}) == len(train_sample)
    # the checker itself does see overlap
    assert split_overlap(test[:3], test[1:5]) == {r["question"] for r in test[1:3]}


def test_solution_format(train_sample):
    counts = set()
    for p in train_sample[:2000]:
        steps = split_steps(p.solution)
        counts.add(len(steps))
        assert len(steps) == len(p.steps)
        for s in steps:
            assert len(re.findall(r"\d+ [-+*/] \d+ = \d+", s)) == 1
        assert steps[-1].endswith(f"The answer is \\boxed{{{p.answer}}}.")
        assert "\\boxed" not in "".join(steps[:-1])
        assert last_boxed_int(p.solution) == p.answer and is_correct(p.solution, str(p.answer))
    assert counts == {2, 3, 4, 5}


def test_the_backward_check_undoes_every_step_and_repeats_the_answer(train_sample):
    """``checked_solution`` (what models/reasoner learns): after the answer, one true
    equation per main step, last step first, back to the starting number, then the same
    answer again."""
    for p in train_sample[:2000]:
        assert p.checked_solution.startswith(p.solution)
        *undo, end = split_steps(p.check)
        # the containers' product ("The boxes hold 3 * 4 = 12 ...") is not undone, only
        # the step that adds it
        main = [step for step in split_steps(p.solution) if not step.startswith("The ")]
        equations = [re.search(r"(\d+) ([-+*/]) (\d+) = (\d+)", s).groups() for s in undo]
        for a, op, b, c in equations:
            assert eval(f"{a} {op.replace('/', '//')} {b}") == int(c), p.check
        assert int(equations[0][0]) == p.answer
        start = int(re.search(r"started with (\d+)", end).group(1))
        assert int(equations[-1][3]) == start == int(re.search(r"\d+", p.question).group())
        assert len(undo) == len(main)
        assert last_boxed_int(p.checked_solution) == p.answer
        assert end.endswith(f"The answer is \\boxed{{{p.answer}}}.")
        assert p.check_steps == len(undo)
        for steps in range(1, p.check_steps + 1):  # cut short: the answer, not the next number
            cut = p.answered_during_check(steps)
            kept = len(split_steps(p.solution)) + steps - 1  # the last step gets the answer line
            assert split_steps(cut)[:-1] == split_steps(p.checked_solution)[:kept]
            assert cut.endswith(f"The answer is \\boxed{{{p.answer}}}.")
        with pytest.raises(ValueError, match="steps"):
            p.answered_during_check(p.check_steps + 1)


def test_check_steps_accepts_gold_solutions(train_sample):
    for p in train_sample[:2000]:
        assert all(check_steps(p.question, p.solution)), p.solution
        assert all(check_steps(p.question, p.solution, gold=p.solution))
        assert all(check_steps(p.question, p.solution, gold=p.answer))


def _corrupt_product(p):
    """Replace the result of the first multiplication; returns (text, step index) or None."""
    steps = split_steps(p.solution)
    for i, s in enumerate(steps):
        m = re.search(r"(\d+) \* (\d+) = (\d+)", s)
        if m:
            wrong = int(m.group(3)) + 10
            steps[i] = s[: m.start(3)] + str(wrong) + s[m.end(3) :]
            return "\n\n".join(steps), i
    return None


def test_check_steps_flags_a_wrong_product_and_everything_after(train_sample):
    checked = 0
    for p in train_sample[:500]:
        corrupted = _corrupt_product(p)
        if corrupted is None:
            continue
        text, i = corrupted
        labels = check_steps(p.question, text)
        assert labels == [True] * i + [False] * (len(labels) - i), (text, labels)
        checked += 1
    assert checked > 50


def test_check_steps_unavailable_operand_and_wrong_operation():
    q = (
        "Tom has 23 apples. He buys 48 more apples. He loses 15 apples. "
        "How many apples does Tom have now?"
    )
    good = "Tom has 23 + 48 = 71 apples.\n\nTom has 71 - 15 = 56 apples. The answer is \\boxed{56}."
    assert check_steps(q, good) == [True, True]
    copied_wrong = (
        "Tom has 23 + 49 = 72 apples.\n\nTom has 72 - 15 = 57 apples. The answer is \\boxed{57}."
    )
    assert check_steps(q, copied_wrong) == [False, False]
    wrong_op = (
        "Tom has 23 + 48 = 71 apples.\n\nTom has 71 + 15 = 86 apples. The answer is \\boxed{86}."
    )
    assert check_steps(q, wrong_op) == [True, True]  # arithmetic alone cannot tell
    assert check_steps(q, wrong_op, gold=good) == [True, False]
    assert check_steps(q, wrong_op, gold=56) == [True, False]
    assert not is_correct(wrong_op, "56") and is_correct(good, "56")


def test_slip_result_miswrites_one_result_digit_and_cuts_after_it(train_sample):
    rng = random.Random(3)
    for p in train_sample[:50]:
        steps = split_steps(p.solution)
        for i in range(len(steps)):
            slipped = slip_result(p.solution, i, rng)
            got = split_steps(slipped)
            assert got[:i] == steps[:i] and len(got) == i + 1
            assert check_steps(p.question, slipped, gold=p.solution) == [True] * i + [False]
            before, after = re.findall(r"\d+", steps[i]), re.findall(r"\d+", got[i])
            changed = [(a, b) for a, b in zip(before, after) if a != b]
            assert (
                len(before) == len(after) and 1 <= len(changed) <= 2
            )  # the result, and its \boxed{} copy
            assert all(
                len(a) == len(b) and sum(x != y for x, y in zip(a, b)) == 1 for a, b in changed
            )
        if len(steps) > 1:
            assert not is_correct(slip_result(p.solution, len(steps) - 1, rng), p.answer)
    assert slip_result("No arithmetic here.", 0, rng) is None


def test_result_digit_labels_mark_where_a_result_goes_wrong():
    def marked(step):
        return [(step[i], ok) for i, ok in sorted(result_digit_labels(step).items())]

    assert marked("Mia has 14 + 29 = 43 eggs.") == [("4", True), ("3", True)]
    assert marked("Mia has 14 + 29 = 45 eggs.") == [("4", True), ("5", False)]
    assert marked("Mia has 14 + 29 = 143 eggs.") == [("1", False), ("4", False), ("3", False)]
    # a boxed answer must copy the step's last written result
    assert marked("He has 10 - 6 = 4 pens. The answer is \\boxed{7}.") == [
        ("4", True),
        ("7", False),
    ]
    assert (
        marked("He has 3 * 4 = 12 pens. The answer is \\boxed{12}.")
        == [("1", True), ("2", True)] * 2
    )
    assert marked("No numbers to check.") == []


def test_program_aided_format_prints_the_answer(train_sample):
    for p in train_sample[:500]:
        assert run_program(p.program) == str(p.answer)
        assert p.program.strip().splitlines()[-1].startswith("print(")
    p = generate_problem(random.Random(7))
    prompt = PROGRAM_PROMPT_TEMPLATE.format(question=p.question)
    assert prompt.endswith("\nProgram:\n")
