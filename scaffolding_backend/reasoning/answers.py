"""Final-answer extraction and equivalence, built on math-verify.

We only locate *where* the answer is (the last ``\\boxed{...}``, else the text
after the last "answer is", else the last number); math-verify parses the
LaTeX / expression and decides equivalence, so ``1,000`` equals ``1000``,
``0.5`` equals ``\\frac{1}{2}`` and ``-7`` equals ``-7.0``.
"""

from __future__ import annotations

import functools
import logging
import re

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

from ..kernel.controller import Answer

# math-verify's own timeouts use SIGALRM, which only works on the main thread, and a
# Triton stub or an asyncio executor is not that; we bound the input length instead.
logging.getLogger("math_verify").setLevel(logging.ERROR)
MAX_ANSWER_CHARS = 300

_LATEX_ONLY = [LatexExtractionConfig(boxed_match_priority=0)]
_LATEX_OR_EXPR = [LatexExtractionConfig(), ExprExtractionConfig()]
_ANSWER_IS = re.compile(r"answer\s+is\s*:?\s*(.+)", re.IGNORECASE | re.DOTALL)
_NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?")


def last_boxed_content(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), nested braces included."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    open_brace = text.index("{", start)
    depth = 0
    for position in range(open_brace, len(text)):
        if text[position] == "{":
            depth += 1
        elif text[position] == "}":
            depth -= 1
            if depth == 0:
                return text[open_brace + 1 : position]
    return None  # unbalanced: the generation was cut inside the box


@functools.lru_cache(maxsize=4096)
def _parsed(text: str, latex_only: bool) -> tuple:
    """math-verify's parse, kept for answers seen before: the samples of a vote mostly box
    the same few numbers, and a parse costs about 0.08 ms of the event loop's time."""
    if len(text) > MAX_ANSWER_CHARS or not text.strip():
        return ()
    config = _LATEX_ONLY if latex_only else _LATEX_OR_EXPR
    return tuple(parse(text, extraction_config=config, parsing_timeout=None))


def extract_answer(text: str) -> Answer | None:
    boxed = last_boxed_content(text)
    if boxed is not None and boxed.strip():
        parsed = _parsed(f"${boxed}$", latex_only=True)
        if parsed:
            return Answer(text=boxed.strip(), parsed=parsed, source="boxed")
    answer_is = list(_ANSWER_IS.finditer(text))
    if answer_is:
        tail = answer_is[-1].group(1).strip().split("\n")[0].rstrip(".")
        parsed = _parsed(tail, latex_only=False)
        if parsed:
            return Answer(text=str(parsed[-1]), parsed=parsed, source="answer_is")
    numbers = _NUMBER.findall(text)
    if numbers:
        parsed = _parsed(numbers[-1], latex_only=False)
        if parsed:
            return Answer(text=numbers[-1].replace(",", ""), parsed=parsed, source="last_number")
    return None


def _number(answer: Answer):
    value = answer.parsed[0] if answer.parsed else None
    return value if getattr(value, "is_Number", False) else None


def answers_equal(a: Answer | None, b: Answer | None) -> bool:
    if a is None or b is None:
        return False
    if a.text == b.text:
        return True
    x, y = _number(a), _number(b)
    if x is not None and y is not None:
        # plain numbers, the common case when voting: exact sympy arithmetic, no verify() round trip
        return bool(abs(x - y) <= 1e-9 * max(1, abs(x), abs(y)))
    return bool(verify(list(a.parsed), list(b.parsed), timeout_seconds=None))


def parse_reference(answer: str) -> Answer | None:
    """A gold answer as written in a dataset (``"1,000"``, ``"\\frac{1}{2}"``, ``"-7"``)."""
    return extract_answer(f"\\boxed{{{answer}}}")


def is_correct(prediction: Answer | None, reference: str) -> bool:
    return answers_equal(prediction, parse_reference(reference))
