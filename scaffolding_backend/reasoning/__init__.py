"""The method library: answers and their equivalence (math-verify), voting, sampling,
reward scoring and step-wise search, shared by the controllers."""

from .answers import answers_equal, extract_answer, is_correct, parse_reference
from .voting import Tally, tally

__all__ = ["Tally", "answers_equal", "extract_answer", "is_correct", "parse_reference", "tally"]
