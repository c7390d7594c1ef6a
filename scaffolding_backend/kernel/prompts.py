"""How a question and partial solutions become a generator prompt.

The generator's prompt template and step delimiter belong to the model being
served, so they arrive from configuration, not from a controller.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_TEMPLATE = "Question: {question}\nAnswer:\n"
DEFAULT_STEP_DELIMITER = "\n\n"
# the program-aided form (a Python program whose last line prints the answer), as the
# shipped generator learned it (scaffolding_training.arithmetic.PROGRAM_PROMPT_TEMPLATE)
DEFAULT_PROGRAM_TEMPLATE = "Question: {question}\nProgram:\n"


@dataclass(frozen=True)
class PromptFormat:
    template: str = DEFAULT_TEMPLATE
    step_delimiter: str = DEFAULT_STEP_DELIMITER
    program_template: str = DEFAULT_PROGRAM_TEMPLATE

    def __post_init__(self):
        if "{question}" not in self.template or "{question}" not in self.program_template:
            raise ValueError("prompt template must contain '{question}'")

    def prompt(self, question: str, steps: list[str] | tuple[str, ...] = ()) -> str:
        """The prompt for the next generation: the question, then any steps already taken."""
        head = self.template.replace("{question}", question)
        if not steps:
            return head
        return head + self.step_delimiter.join(steps) + self.step_delimiter

    def program_prompt(self, question: str) -> str:
        """The prompt for a program that prints the answer (program-aided methods)."""
        return self.program_template.replace("{question}", question)

    def split_steps(self, solution: str) -> list[str]:
        return [step.strip() for step in solution.split(self.step_delimiter) if step.strip()]

    def join_steps(self, steps: list[str]) -> str:
        return self.step_delimiter.join(steps)
