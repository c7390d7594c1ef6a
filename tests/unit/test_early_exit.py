"""The early-exit methods with scripted generations: the stopping rules, what is stopped,
what votes, and that decisions depend on sample order, not on finishing order."""

from __future__ import annotations

import math

import pytest

from scaffolding_backend.controllers.adaptive_consistency import leader_settled
from scaffolding_backend.controllers.deepconf import lowest_window, threshold
from scaffolding_backend.kernel.params import InvalidParameter
from scaffolding_backend.kernel.tasks import FinishReason
from scaffolding_backend.workers.in_process import FunctionWorker


def scripted(traces):
    """Sample i (in the order seeds are handed out) writes traces[i] = (answer, log-probs)."""
    seeds: dict[int, int] = {}

    def fill(task):
        answer, log_probs = traces[seeds.setdefault(task.seed, len(seeds)) % len(traces)]
        task.output_text = f"It is {answer}. The answer is \\boxed{{{answer}}}."
        task.token_log_probs = list(log_probs)
        task.num_output_tokens = len(log_probs)
        task.num_prompt_tokens = 10
        task.finish_reason = FinishReason.EOS

    return FunctionWorker(fill)


CONFIDENT = [-0.05] * 12
SLIPPED = [-0.05] * 5 + [-6.0] + [-0.05] * 6  # one very unlikely token: a slipped digit


@pytest.mark.parametrize(
    ("votes", "settled"),
    [
        ([4], True),
        ([3], False),
        ([6, 1], True),
        ([5, 1], False),
        ([], False),
        ([2, 2], False),
        ([9, 3], True),
    ],
)
def test_the_beta_criterion(votes, settled):
    assert leader_settled(votes, 0.95) is settled


def test_adaptive_consistency_stops_once_the_vote_is_settled(run_method):
    worker = scripted([("7", CONFIDENT)])
    account = run_method("adaptive_consistency", {"samples": 16, "wave": 4}, {"generation": worker})
    assert account.outcome.answer.text == "7"
    assert account.tasks == 4 and len(worker.calls) == 4  # one wave settled it
    assert account.outcome.details["samples_used"] == 4


def test_adaptive_consistency_samples_on_while_the_vote_is_split(run_method):
    worker = scripted([("7", CONFIDENT), ("8", CONFIDENT)])
    account = run_method("adaptive_consistency", {"samples": 12, "wave": 4}, {"generation": worker})
    assert account.tasks == 12  # never settled: every sample drawn
    assert not account.outcome.details["settled"]


def test_adaptive_consistency_decides_in_sample_order(run_method):
    """Samples 0-3 agree and settle it; a later wave never starts, whatever it would say."""
    worker = scripted([("5", CONFIDENT)] * 4 + [("9", CONFIDENT)] * 12)
    account = run_method(
        "adaptive_consistency",
        {"samples": 16, "wave": 4, "confidence": 0.95},
        {"generation": worker},
    )
    assert account.outcome.answer.text == "5" and account.tasks == 4


def test_confidence_is_the_lowest_window():
    assert lowest_window([-1.0, -1.0, -5.0, -1.0], 2) == pytest.approx(-3.0)
    assert lowest_window([-2.0], 8) == pytest.approx(-2.0)
    assert threshold([0.9, 0.5, 0.8, 0.2], 0.5) == 0.8


def test_deepconf_offline_leaves_the_unconfident_traces_out_of_the_vote(run_method):
    # three slipped traces agree on a wrong answer; two confident ones on the right one
    traces = [("13", SLIPPED)] * 3 + [("12", CONFIDENT)] * 2
    account = run_method(
        "deepconf",
        {"mode": "offline", "samples": 5, "keep": 0.4, "window": 4},
        {"generation": scripted(traces)},
    )
    assert account.outcome.answer.text == "12"
    groups = {group["answer"]: group for group in account.outcome.details["tally"]["groups"]}
    assert set(groups) == {"12"} and account.tasks == 5


def test_deepconf_online_stops_a_trace_that_loses_confidence_and_stops_sampling_at_consensus(
    run_method,
):
    # the warm-up disagrees; the third trace slips (a very unlikely token) and is stopped there
    traces = [("12", CONFIDENT), ("11", CONFIDENT), ("13", SLIPPED)] + [("12", CONFIDENT)] * 13
    worker = scripted(traces)
    params = {
        "mode": "online",
        "samples": 16,
        "warmup": 2,
        "wave": 2,
        "keep": 0.9,
        "window": 4,
        "consensus": 0.7,
    }
    account = run_method("deepconf", params, {"generation": worker})
    details = account.outcome.details
    assert account.outcome.answer.text == "12"
    assert details["discarded"] == 1
    slipped = next(task for task in worker.calls if min(task.token_log_probs) < -1)
    assert slipped.finish_reason is FinishReason.CANCELLED and slipped.num_output_tokens < len(
        SLIPPED
    )
    # trace 4 gives 12 three of four votes (0.75 >= 0.7): trace 5, in flight with it, is stopped
    assert details["settled"] and account.tasks == 6 and account.stopped_tasks == 2
    groups = {group["answer"]: group["votes"] for group in details["tally"]["groups"]}
    assert groups == {"12": 3, "11": 1}
    assert math.isclose(details["threshold"], math.exp(-0.05), rel_tol=1e-6)


def chain_writer(chain: str):
    """A greedy model whose whole chain is ``chain`` (a word per token): a chunk continues it
    from where the prompt stops; a probe answers with the last number written so far."""
    words = chain.split(" ")

    def fill(task):
        task.num_prompt_tokens = 10
        if task.phase == "probe":
            written = task.prompt[len("Question: q\nAnswer:\n") :].split(" The answer is")[0]
            numbers = [w.strip(".") for w in written.split() if w.strip(".").isdigit()]
            task.output_text = (numbers[-1] if numbers else "?") + "}"
            task.num_output_tokens = 2
            task.finish_reason = FinishReason.STOP_WORD
            return
        done = len(task.prompt[len("Question: q\nAnswer:\n") :].split())
        new = words[done : done + task.max_tokens]
        task.output_text = ("" if done == 0 else " ") + " ".join(new)
        task.num_output_tokens = len(new)
        ended = done + len(new) == len(words)
        task.finish_reason = FinishReason.EOS if ended else FinishReason.LENGTH

    return FunctionWorker(fill)


CHAIN = "Mia has 33 - 19 = 14 eggs. Mia has 14 + 29 = 43 eggs. The answer is \\boxed{43}."


def test_dynasor_cot_stops_once_probes_agree(run_method):
    # probes after 4, 8 and 12 words read 33 (mid-step), 14, 14: the last two agree
    worker = chain_writer(CHAIN + " She counts them again and again and again and again.")
    events: list = []
    account = run_method(
        "dynasor_cot", {"probe_every": 4, "agree": 2}, {"generation": worker}, events=events
    )
    details = account.outcome.details
    assert details["probes"] == ["33", "14", "14"] and details["stopped_early"]
    assert account.outcome.answer.text == "14"
    assert details["chain_tokens"] == 12  # the rest of the chain was never written
    assert account.output_tokens == 12 + 3 * 2  # the probes' tokens count
    assert [e.data["answer"] for e in events if e.kind.value == "probe"] == ["33", "14", "14"]


def test_dynasor_cot_reads_a_chain_that_ends_first_like_cot(run_method):
    worker = chain_writer(CHAIN)
    account = run_method("dynasor_cot", {"probe_every": 4, "agree": 3}, {"generation": worker})
    details = account.outcome.details
    assert not details["stopped_early"] and account.outcome.answer.text == "43"
    assert details["chain_tokens"] == len(CHAIN.split(" "))
    assert account.outcome.text == CHAIN


def test_dynasor_cot_knobs_are_checked(run_method):
    with pytest.raises(InvalidParameter, match="probe_every"):
        run_method("dynasor_cot", {"probe_every": 0}, {})
    with pytest.raises(InvalidParameter, match="agree"):
        run_method("dynasor_cot", {"agree": 0}, {})


class ReverseWorker(FunctionWorker):
    """Fills a wave's tasks, then reports them finished last first, as an engine may."""

    async def run(self, tasks, on_done):
        for task in tasks:
            self.fill(task)
            self.calls.append(task)
        for task in reversed(tasks):
            on_done(task)
        return len(tasks)


def test_early_exit_decides_on_the_same_samples_whatever_order_they_finish_in(run_method):
    traces = [("5", CONFIDENT), ("5", CONFIDENT), ("9", CONFIDENT), ("9", CONFIDENT)]
    params = {"samples": 8, "wave": 4, "confidence": 0.8}
    in_order = run_method("adaptive_consistency", params, {"generation": scripted(traces)})
    reverse = ReverseWorker(scripted(traces).fill)
    reversed_ = run_method("adaptive_consistency", params, {"generation": reverse})
    for account in (in_order, reversed_):
        # two agreeing samples settle it at 0.8 (P = 0.875); samples 2 and 3 do not vote
        assert account.outcome.answer.text == "5"
        assert account.outcome.details["samples_used"] == 2
