import pytest

from scaffolding_backend.reasoning.answers import (
    answers_equal,
    extract_answer,
    is_correct,
    last_boxed_content,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so \\boxed{\\frac{1}{2}} and done", "\\frac{1}{2}"),
        ("first \\boxed{3}, then \\boxed{1,000}", "1,000"),
        ("nested \\boxed{\\frac{\\sqrt{2}}{2}}", "\\frac{\\sqrt{2}}{2}"),
        ("Tom has 23 + 48 = 71 apples.\n\nThe answer is \\boxed{71}.", "71"),
    ],
)
def test_last_boxed_wins_and_keeps_nested_braces(text, expected):
    answer = extract_answer(text)
    assert answer is not None and answer.source == "boxed"
    assert answer.text == expected


def test_unbalanced_box_is_not_an_answer_but_numbers_still_are():
    assert last_boxed_content("cut off \\boxed{12") is None
    answer = extract_answer("cut off \\boxed{12")
    assert answer.source == "last_number" and answer.text == "12"


def test_answer_is_phrase_and_last_number_fallback():
    assert extract_answer("So the answer is 1,000.").source == "answer_is"
    assert extract_answer("So the answer is 1,000.").text == "1000"
    fallback = extract_answer("we get 12 apples and then 15 pears")
    assert fallback.source == "last_number" and fallback.text == "15"
    assert extract_answer("no digits here at all") is None
    assert extract_answer("") is None


@pytest.mark.parametrize(
    "left, right", [("1,000", "1000"), ("0.5", "\\frac{1}{2}"), ("-7", "-7.0")]
)
def test_equivalent_numbers_compare_equal(left, right):
    assert answers_equal(
        extract_answer(f"\\boxed{{{left}}}"), extract_answer(f"The answer is {right}")
    )
    assert is_correct(extract_answer(f"\\boxed{{{left}}}"), right)


def test_different_numbers_and_missing_answers_are_not_equal():
    assert not answers_equal(extract_answer("\\boxed{7}"), extract_answer("\\boxed{-7}"))
    assert not answers_equal(None, extract_answer("\\boxed{7}"))
    assert not is_correct(None, "7")
