"""The program-aided methods on a scripted generator, with their programs run by the real
sandbox runner in-process (a FunctionWorker around it)."""

from __future__ import annotations

import pytest

from scaffolding_backend.kernel.tasks import GENERATION, PROGRAM_GENERATION, SANDBOX, SandboxTask
from scaffolding_backend.sandbox import Isolation, Limits, Sandbox, SandboxUnavailable
from scaffolding_backend.workers.in_process import FunctionWorker

PROGRAM_PROMPT = "Question: q\nProgram:\n"


@pytest.fixture(scope="module")
def sandbox_worker():
    limits = Limits(wall_s=3.0, cpu_s=1)
    sandbox = Sandbox(limits, slots=8)
    try:
        sandbox.check()
    except SandboxUnavailable:
        sandbox = Sandbox(limits, isolation=Isolation.RLIMITS, slots=8)

    def run(task):
        assert isinstance(task, SandboxTask)
        result = sandbox.run(task.code, task.stdin)
        task.stdout, task.stderr = result.stdout, result.stderr
        task.exit_status, task.killed_reason = result.exit_status, result.killed_reason.value
        task.wall_s, task.cpu_s = result.wall_s, result.cpu_s

    return lambda: FunctionWorker(run)


def scripted(programs):
    """Hands out the programs in turn, for the program prompt only."""
    handed = iter(programs)

    def generate(task):
        assert task.prompt == PROGRAM_PROMPT
        task.output_text = next(handed)
        task.num_output_tokens = len(task.output_text.split())

    return FunctionWorker(generate)


def test_pal_answers_with_what_the_program_printed(run_method, sandbox_worker):
    generator = scripted(["x = 6\nx = x * 7\nprint(x)"])
    account = run_method("pal", {}, {PROGRAM_GENERATION: generator, SANDBOX: sandbox_worker()})
    assert account.outcome.answer.text == "42"
    assert account.outcome.text.endswith("# output:\n42\n")
    assert generator.calls[0].temperature == 0.0  # greedy by default
    assert account.outcome.details["runs"][0]["exit_status"] == 0
    assert account.sub_requests == {PROGRAM_GENERATION: 1, SANDBOX: 1}


def test_pal_without_a_working_program_has_no_answer(run_method, sandbox_worker):
    account = run_method(
        "pal", {}, {PROGRAM_GENERATION: scripted(["print(y)"]), SANDBOX: sandbox_worker()}
    )
    assert account.outcome.answer is None
    assert "NameError" in account.outcome.text


def test_pal_vote_counts_executed_results_and_failed_programs_abstain(run_method, sandbox_worker):
    programs = [
        "print(2 + 3)",  # 5
        "print(undefined)",  # abstains: NameError
        "print(10 - 3)",  # 7
        "while True: pass",  # abstains: killed (cpu)
        "a = 1\nprint(a * 7)",  # 7
        "",  # abstains: nothing to run
        "print('7')",  # 7
        "print(5)",  # 5
    ]
    sandbox = sandbox_worker()
    account = run_method(
        "pal_vote", {"samples": 8}, {PROGRAM_GENERATION: scripted(programs), SANDBOX: sandbox}
    )
    outcome = account.outcome
    assert outcome.answer.text == "7"
    tally = outcome.details["tally"]
    assert tally["abstained"] == [1, 3, 5]
    assert [(g["answer"], g["votes"]) for g in tally["groups"]] == [("7", 3), ("5", 2)]
    assert len(sandbox.calls) == 7  # the empty program is not run
    assert outcome.details["runs"][3]["killed_reason"] == "cpu"
    assert outcome.details["runs"][5] is None


def test_pal_vote_samples_are_capped(run_method):
    from scaffolding_backend.kernel.params import InvalidParameter

    with pytest.raises(InvalidParameter, match="samples"):
        run_method("pal_vote", {"samples": 1000}, {})


def test_programs_are_written_by_the_program_generation_worker(run_method, sandbox_worker):
    text_generator = scripted([])
    account = run_method(
        "pal_vote",
        {"samples": 2},
        {
            GENERATION: text_generator,
            PROGRAM_GENERATION: scripted(["print(3)", "print(3)"]),
            SANDBOX: sandbox_worker(),
        },
    )
    assert account.outcome.answer.text == "3"
    assert text_generator.calls == []
    assert account.sub_requests == {PROGRAM_GENERATION: 2, SANDBOX: 2}


def test_the_program_generation_worker_targets_the_configured_model(monkeypatch):
    """The scaffolding model's program worker: the ``program_generator`` model over the native
    contract; with ``program_generator`` "", the generation worker (BLS faked: it exists only
    inside a Triton stub)."""
    import sys
    import types

    from scaffolding_backend.service.config import ScaffoldingConfig
    from scaffolding_backend.workers.generation import program_generation_worker_factory

    class FakeBLSGenerationWorker:
        def __init__(self, model, contract, context, counter, fold):
            self.model, self.contract, self.fold = model, contract, fold

    fake = types.ModuleType("scaffolding_backend.workers.triton_bls")
    fake.BLSGenerationWorker = FakeBLSGenerationWorker  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "scaffolding_backend.workers.triton_bls", fake)

    default = ScaffoldingConfig.load({}, environ={})
    assert default.program_generator == "program_generator"
    worker = program_generation_worker_factory(default, "model_repository")(None)
    assert (worker.model, worker.contract.name, worker.fold) == ("program_generator", "native", 1)
    folding = ScaffoldingConfig.load({"fold_generations": "4"}, environ={})
    assert program_generation_worker_factory(folding, "model_repository")(None).fold == 4

    shared = ScaffoldingConfig.load(
        {"program_generator": "", "generator_model": "ensemble", "generator_contract": "trtllm"},
        environ={},
    )
    worker = program_generation_worker_factory(shared, "model_repository")(None)
    assert (worker.model, worker.contract.name) == ("ensemble", "trtllm")
