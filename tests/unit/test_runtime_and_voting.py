"""Runtime semantics and the cot / majority_vote controllers, with in-process workers."""

import asyncio

import pytest

from scaffolding_backend.controllers import build_controller
from scaffolding_backend.kernel.account import Status
from scaffolding_backend.kernel.controller import Controller, Outcome, Parallel
from scaffolding_backend.kernel.params import Caps, InvalidParameter, MethodParams
from scaffolding_backend.kernel.prompts import PromptFormat
from scaffolding_backend.kernel.runtime import (
    Limits,
    RequestFailed,
    Runtime,
    WorkerError,
    derive_seed,
)
from scaffolding_backend.kernel.tasks import generation
from scaffolding_backend.service.config import ScaffoldingConfig
from scaffolding_backend.workers.in_process import FunctionWorker

DEFAULT_CAPS = ScaffoldingConfig().caps


def scripted(answers):
    """A generator worker whose answer depends only on the task's seed."""

    def fill(task):
        task.output_text = (
            answers[task.seed % len(answers)] if task.seed is not None else answers[0]
        )
        task.num_prompt_tokens = 10
        task.num_output_tokens = 4
        task.finish_reason = "eos"

    return FunctionWorker(fill)


def by_seed_order(texts):
    """Answers in the order seeds are handed out: sample i answers texts[i]."""
    seeds = {}

    def fill(task):
        index = seeds.setdefault(task.seed, len(seeds))
        task.output_text = texts[index]
        task.num_output_tokens = 4

    return FunctionWorker(fill)


def test_majority_vote_groups_equivalent_answers_and_skips_unparseable(run_method):
    worker = by_seed_order(
        [
            "\\boxed{5}",
            "\\boxed{1,000}",
            "no answer",
            "\\boxed{5.0}",
            "\\boxed{1000}",
            "so 5",
            "\\boxed{7}",
            "\\boxed{5}",
        ]
    )
    account = run_method("majority_vote", {"samples": 8}, {"generation": worker})
    record = account.to_json()
    assert record["answer"] in {"5", "5.0"}
    groups = {g["answer"]: g["votes"] for g in record["tally"]["groups"]}
    assert sorted(groups.values(), reverse=True) == [4, 2, 1]
    assert record["tally"]["abstained"] == [2]
    assert record["sub_requests"] == 8 and record["tasks"] == 8
    assert record["output_tokens"] == 32
    assert len(record["candidates"]) == 8


def test_majority_vote_tie_goes_to_the_answer_that_appeared_first(run_method):
    worker = by_seed_order(["\\boxed{3}", "\\boxed{9}", "\\boxed{9}", "\\boxed{3}"])
    account = run_method("majority_vote", {"samples": 4}, {"generation": worker})
    assert account.outcome.answer.text == "3"


def test_majority_vote_streams_a_running_tally(run_method):
    events = []
    run_method(
        "majority_vote",
        {"samples": 3},
        {"generation": by_seed_order(["\\boxed{1}", "\\boxed{2}", "\\boxed{2}"])},
        events=events,
    )
    samples = [e for e in events if e.kind == "sample"]
    assert [e.data["finished"] for e in samples] == [1, 2, 3]
    assert samples[-1].data["tally"] == {"1": 1, "2": 2}
    assert events[-1].kind == "tally"


def test_cot_is_one_greedy_generation(run_method):
    worker = scripted(["Step one.\n\nThe answer is \\boxed{42}."])
    account = run_method("cot", {}, {"generation": worker})
    assert account.outcome.answer.text == "42"
    assert (
        len(worker.calls) == 1 and worker.calls[0].temperature == 0 and worker.calls[0].seed is None
    )
    assert worker.calls[0].prompt == "Question: q\nAnswer:\n"


def test_seeds_are_derived_from_the_request_seed_and_replay_exactly(run_method):
    def seeds_for(seed):
        worker = scripted(["\\boxed{1}"])
        run_method("majority_vote", {"samples": 4}, {"generation": worker}, seed=seed)
        return sorted(task.seed for task in worker.calls)

    assert seeds_for(7) == seeds_for(7)
    assert seeds_for(7) != seeds_for(8)
    assert len(set(seeds_for(7))) == 4
    assert derive_seed(7, (0, 1), 2) != derive_seed(7, (1, 0), 2)


def test_bad_parameters_name_the_field():
    caps = Caps(max_samples=16, max_tokens=128, max_steps=32)
    cases = {
        "samples": {"samples": 17},
        "max_tokens": {"max_tokens": 129},
        "temperature": {"temperature": "hot"},
        "top_p": {"top_p": 1.5},
        "bogus": {"bogus": 1},
    }
    for field, params in cases.items():
        with pytest.raises(InvalidParameter) as error:
            build_controller("majority_vote", params, PromptFormat(), caps)
        assert error.value.field == field, params
    with pytest.raises(InvalidParameter) as error:
        build_controller("no_such_method", {}, PromptFormat(), caps)
    assert error.value.field == "method"


class SlowWorker:
    def __init__(self):
        self.started = 0
        self.cancelled = 0

    async def run(self, tasks, on_done):
        async def one(task):
            self.started += 1
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                self.cancelled += 1
                raise

        await asyncio.gather(*(one(t) for t in tasks))
        return len(tasks)


def test_deadline_stops_outstanding_work():
    worker = SlowWorker()
    controller = build_controller("majority_vote", {"samples": 4}, PromptFormat(), DEFAULT_CAPS)
    with pytest.raises(RequestFailed) as failure:
        asyncio.run(
            Runtime({"generation": worker}).run(
                controller.process("q"),
                method="majority_vote",
                seed=0,
                limits=Limits(deadline_s=0.2),
            )
        )
    assert failure.value.reason is Status.DEADLINE
    assert failure.value.account.status is Status.DEADLINE
    assert worker.started == 4 and worker.cancelled == 4


def test_cancellation_stops_outstanding_work():
    worker = SlowWorker()
    controller = build_controller("majority_vote", {"samples": 3}, PromptFormat(), DEFAULT_CAPS)

    async def scenario():
        run = asyncio.ensure_future(
            Runtime({"generation": worker}).run(
                controller.process("q"), method="majority_vote", seed=0
            )
        )
        await asyncio.sleep(0.1)
        run.cancel()
        return await run

    with pytest.raises(RequestFailed) as failure:
        asyncio.run(scenario())
    assert failure.value.reason is Status.CANCELLED
    assert worker.cancelled == 3


def test_task_budget_is_enforced(run_method):
    with pytest.raises(RequestFailed) as failure:
        run_method(
            "majority_vote",
            {"samples": 8},
            {"generation": scripted(["\\boxed{1}"])},
            limits=Limits(max_tasks=5),
        )
    assert failure.value.reason is Status.BUDGET


def test_worker_errors_fail_the_request_with_the_message(run_method):
    def refused(task):
        raise WorkerError("model 'generator': text_input: too long", client_error=True)

    with pytest.raises(RequestFailed) as failure:
        run_method("cot", {}, {"generation": FunctionWorker(refused)})
    assert failure.value.reason is Status.WORKER and failure.value.client_error
    assert str(failure.value) == "model 'generator': text_input: too long"


def test_an_unexpected_worker_exception_keeps_its_details_out_of_the_message(run_method):
    def broken(task):
        raise KeyError("text_output")

    with pytest.raises(RequestFailed) as failure:
        run_method("cot", {}, {"generation": FunctionWorker(broken)})
    assert str(failure.value) == "a worker failed unexpectedly"
    assert isinstance(failure.value.__cause__, KeyError)  # for the server's log
    assert not failure.value.client_error


class TwoBranches(Controller):
    """Parallel sub-controllers get distinct, position-derived seeds and their results back."""

    def process(self, question):
        def branch(label):
            [task] = yield [generation("p", max_tokens=4, temperature=1.0)]
            return f"{label}:{task.seed}"

        results = yield Parallel([branch("a"), branch("b")])
        return Outcome(text=",".join(results), answer=None)


def test_parallel_branches_run_concurrently_with_their_own_seeds():
    worker = scripted(["x"])
    account = asyncio.run(
        Runtime({"generation": worker}).run(
            TwoBranches(MethodParams(), PromptFormat()).process("q"), method="two", seed=3
        )
    )
    a, b = account.outcome.text.split(",")
    assert a.startswith("a:") and b.startswith("b:")
    assert int(a[2:]) == derive_seed(3, (0,), 0) and int(b[2:]) == derive_seed(3, (1,), 0)


def test_a_row_that_breaks_a_batch_fails_only_its_own_request():
    from scaffolding_backend.service.batching import run_isolated

    calls = []

    def run(rows):
        calls.append(list(rows))
        if "poison" in rows:
            raise ValueError("probability tensor contains either inf, nan or element < 0")
        return [row.upper() for row in rows]

    outcomes = run_isolated([["a", "b"], ["poison"], ["c"]], run)
    assert outcomes[0] == ["A", "B"] and outcomes[2] == ["C"]
    assert isinstance(outcomes[1], ValueError)
    assert calls[0] == ["a", "b", "poison", "c"]  # one batched call first
    assert run_isolated([["a"], ["c"]], run) == [["A"], ["C"]]
    [alone] = run_isolated([["poison"]], run)  # alone in its batch: no second try
    assert isinstance(alone, ValueError)
