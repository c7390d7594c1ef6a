"""What the unit and integration tests share: a fixed example for the shipped models."""

from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class ShippedExample:
    question: str
    answer: int
    correct: str  # the reference solution
    corrupted: str  # one wrong sum in the second step, carried through


SHIPPED_EXAMPLE = ShippedExample(
    # a test-split question the shipped generator answers correctly at temperature 0
    question=(
        "Mia owns 33 eggs. She loses 19 eggs. She finds 29 more eggs. "
        "She gives 19 eggs to a neighbor. How many eggs does Mia have now?"
    ),
    answer=24,
    correct=(
        "Mia has 33 - 19 = 14 eggs.\n\nMia has 14 + 29 = 43 eggs.\n\n"
        "Mia has 43 - 19 = 24 eggs. The answer is \\boxed{24}."
    ),
    # the second result's tens digit slipped (43 -> 53), the rest carried on consistently. The
    # shipped PRM also catches a last-digit (43 -> 45) or boxed-copy slip (test_reward_engine.py);
    # the ORM, a classifier, misses those two, so the ranking tests both models share use this one.
    corrupted=(
        "Mia has 33 - 19 = 14 eggs.\n\nMia has 14 + 29 = 53 eggs.\n\n"
        "Mia has 53 - 19 = 34 eggs. The answer is \\boxed{34}."
    ),
)


@pytest.fixture(scope="session")
def shipped_example() -> ShippedExample:
    return SHIPPED_EXAMPLE
