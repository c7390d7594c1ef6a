"""Dynasor-CoT (Fu et al., 2024, "Efficiently Serving LLM Reasoning Programs with
Certaindex"): stop a chain of thought once the model already knows its answer.

The chain is written ``probe_every`` tokens at a time. After each chunk, a probe asks
the model for its answer now: the chain so far, then ``probe`` (an answer prefix in the
served model's own words), completed greedily for at most ``probe_tokens`` tokens. Once
``agree`` probes in a row give the same answer, the chain stops there and that answer is
the result; a chain that ends by itself first is read like ``cot``. Probes cost tokens
too, and the account counts them (phase ``probe``).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

from ..kernel.controller import Candidate, Controller, EventKind, Outcome, Process, Progress
from ..kernel.params import InvalidParameter
from ..kernel.tasks import FinishReason, GenerationTask, generation
from ..reasoning.answers import Answer, answers_equal, extract_answer
from ..reasoning.sampling import SamplingParams

# what the shipped generator writes before its final answer
DEFAULT_PROBE = " The answer is \\boxed{"


@dataclass
class DynasorCoTParams(SamplingParams):
    temperature: float = 0.0  # greedy, like cot: the chain is the model's best guess
    probe_every: int = 16  # tokens of the chain between probes
    # stop once this many probes in a row give one answer. Two stop too early on the shipped
    # models: a probe mid-chain answers with the last number written, which often repeats
    # across a step boundary ("... = 14 eggs." then "Mia has 14 + ...")
    agree: int = 3
    probe_tokens: int = 8  # the most tokens a probe may write
    probe: str = DEFAULT_PROBE

    def check(self) -> None:
        super().check()
        if not 1 <= self.probe_every <= self.max_tokens:
            raise InvalidParameter(
                "probe_every", f"must be between 1 and max_tokens, got {self.probe_every}"
            )
        if not 1 <= self.agree <= 16:
            raise InvalidParameter("agree", f"must be between 1 and 16, got {self.agree}")
        if not 1 <= self.probe_tokens <= 64:
            raise InvalidParameter(
                "probe_tokens", f"must be between 1 and 64, got {self.probe_tokens}"
            )
        if not self.probe.strip():
            raise InvalidParameter("probe", "must not be empty")


class DynasorCoT(Controller[DynasorCoTParams]):
    name = "dynasor_cot"
    Params = DynasorCoTParams

    def process(self, question: str) -> Process:
        params = self.params
        head = self.prompt_format.prompt(question)
        chain, written = "", 0
        probes: list[Answer | None] = []
        while written < params.max_tokens:
            chunk = params.task(head + chain, phase="reason")
            chunk.stream_as = "chain"
            chunk.max_tokens = min(params.probe_every, params.max_tokens - written)
            yield [chunk]
            chain += chunk.output_text or ""
            written += chunk.num_output_tokens
            if chunk.finish_reason is not FinishReason.LENGTH or written >= params.max_tokens:
                break  # the chain ended by itself (or ran out of tokens): read it like cot
            probe = yield from self._probe(head + chain)
            probes.append(probe)
            yield Progress(
                EventKind.PROBE, {"tokens": written, "answer": probe.text if probe else None}
            )
            if self._settled(probes):
                stopped = chain.rstrip() + params.probe + (probe.text if probe else "") + "}."
                return self._outcome(stopped, probe, written, probes, early=True)
        return self._outcome(chain, extract_answer(chain), written, probes, early=False)

    def _probe(self, text: str) -> Generator[Any, Any, Answer | None]:
        """The model's answer if it had to give one after ``text``."""
        task: GenerationTask = generation(
            text.rstrip() + self.params.probe,
            max_tokens=self.params.probe_tokens,
            temperature=0.0,
            stop_words=["}"],
            phase="probe",
        )
        yield [task]
        written = (task.output_text or "").split("}")[0]
        return extract_answer("\\boxed{" + written + "}")

    def _settled(self, probes: list[Answer | None]) -> bool:
        recent = probes[-self.params.agree :]
        return (
            len(recent) == self.params.agree
            and recent[0] is not None
            and all(answers_equal(recent[0], other) for other in recent[1:])
        )

    @staticmethod
    def _outcome(
        text: str, answer: Answer | None, written: int, probes: list[Answer | None], early: bool
    ) -> Outcome:
        details = {
            "probes": [probe.text if probe else None for probe in probes],
            "stopped_early": early,
            "chain_tokens": written,
        }
        candidate = Candidate(text=text, answer=answer, output_tokens=written)
        return Outcome(text=text, answer=answer, candidates=[candidate], details=details)
