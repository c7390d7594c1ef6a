"""Program-aided reasoning (Gao et al., 2023, PAL): the generator writes a Python program
whose output is the answer; the sandbox runs it. Shared by ``pal`` and ``pal_vote``."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from ..kernel.controller import Answer, Candidate
from ..kernel.prompts import PromptFormat
from ..kernel.tasks import PROGRAM_GENERATION, GenerationTask, SandboxTask, Task, sandbox
from .answers import extract_answer
from .sampling import SamplingParams

MAX_SHOWN_OUTPUT = 2000  # characters of a program's output kept in the candidate's text


def printed_answer(run: SandboxTask) -> Answer | None:
    """The answer a program printed: the last number of its last non-empty output line,
    or None when it failed (an error, a limit) or printed nothing readable."""
    if not run.succeeded or not run.stdout:
        return None
    lines = [line for line in run.stdout.splitlines() if line.strip()]
    return extract_answer(lines[-1]) if lines else None


def program_candidate(generation: GenerationTask, run: SandboxTask | None) -> Candidate:
    """The program, followed by what running it printed (or how it failed)."""
    program = generation.output_text or ""
    if run is None:
        outcome = "# not run: the generator wrote no program"
    elif run.succeeded:
        outcome = f"# output:\n{(run.stdout or '')[-MAX_SHOWN_OUTPUT:]}"
    else:
        reason = f", killed: {run.killed_reason}" if run.killed_reason else ""
        error = (run.stderr or "").strip().splitlines()[-1:] or [""]
        outcome = f"# failed (exit {run.exit_status}{reason}): {error[0][-MAX_SHOWN_OUTPUT:]}"
    return Candidate(
        text=f"{program.rstrip()}\n{outcome}",
        answer=printed_answer(run) if run is not None else None,
        output_tokens=generation.num_output_tokens,
    )


def run_record(run: SandboxTask | None) -> dict[str, Any] | None:
    """What the account says about one run."""
    if run is None:
        return None
    return {
        "exit_status": run.exit_status,
        "killed_reason": run.killed_reason,
        "wall_s": None if run.wall_s is None else round(run.wall_s, 4),
        "cpu_s": None if run.cpu_s is None else round(run.cpu_s, 4),
    }


def write_and_run_programs(
    question: str, count: int, params: SamplingParams, prompt_format: PromptFormat
) -> Generator[list[Task], None, tuple[list[Candidate], list[SandboxTask | None]]]:
    """``count`` programs generated concurrently (greedy when the temperature is 0) by the
    ``program_generation`` worker, then every non-empty one run in the sandbox concurrently;
    a candidate per program."""
    prompt = prompt_format.program_prompt(question)
    generations = [params.task(prompt, phase="program") for _ in range(count)]
    for task in generations:
        task.worker_tag = PROGRAM_GENERATION  # the worker that writes programs
    yield list(generations)
    runs: list[SandboxTask | None] = [
        sandbox(task.output_text or "") if (task.output_text or "").strip() else None
        for task in generations
    ]
    to_run: list[Task] = [run for run in runs if run is not None]
    if to_run:
        yield to_run
    candidates = [program_candidate(task, run) for task, run in zip(generations, runs)]
    return candidates, runs
