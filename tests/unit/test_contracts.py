"""Contract adapters build what their engine declares: here, the native contract's batched
request (a fold of several tasks) and the rows of its answer."""

from __future__ import annotations

import numpy as np
import pytest

from scaffolding_backend.kernel.tasks import GenerationTask
from scaffolding_backend.workers.contracts import NativeContract
from scaffolding_backend.workers.contracts.base import rows_of


def task(**fields) -> GenerationTask:
    return GenerationTask("generation", "sample", prompt="Q", max_tokens=32, **fields)


def test_a_fold_sends_every_sampling_input_as_one_row_per_task():
    tasks = [
        task(temperature=0.8, seed=7, stop_words=["\n\n"]),
        task(temperature=0.0),  # greedy: no seed, no stop words
        task(temperature=0.8, seed=9, top_k=5, stop_words=["\n\n", "Q:"]),
    ]
    request = NativeContract().batch_request(tasks)
    inputs = request.inputs
    assert {name: array.shape for name, array in inputs.items()} == {
        "text_input": (3, 1),
        "max_tokens": (3, 1),
        "temperature": (3, 1),
        "exclude_input_in_output": (3, 1),
        "top_k": (3, 1),
        "seed": (3, 1),
        "stop_words": (3, 2),
    }
    assert inputs["seed"].reshape(-1).tolist() == [7, 0, 9]
    assert inputs["top_k"].reshape(-1).tolist() == [0, 0, 5]
    assert inputs["stop_words"].tolist() == [["\n\n", ""], ["", ""], ["\n\n", "Q:"]]
    assert "stream" not in inputs and "top_p" not in inputs


def test_one_task_gets_the_request_it_got_before_folding_existed():
    single = NativeContract().request(task(temperature=0.8, seed=7, stop_words=["\n\n"]))
    assert single.inputs["stop_words"].tolist() == [["\n\n"]]
    assert set(single.inputs) == {
        "text_input", "max_tokens", "temperature", "exclude_input_in_output", "seed", "stop_words"
    }  # fmt: skip


def test_tasks_that_disagree_on_log_probs_cannot_share_a_request():
    with pytest.raises(ValueError, match="return_log_probs"):
        NativeContract().batch_request([task(), task(return_log_probs=True)])


def test_a_batched_answer_splits_into_one_reply_per_row():
    outputs = {
        "text_output": np.array([[b"a"], [b"b"]], dtype=np.object_),
        "num_output_tokens": np.array([[3], [5]], dtype=np.int32),
        "finish_reason": np.array([[b"eos"], [b"length"]], dtype=np.object_),
        "num_input_tokens": np.array([[4], [4]], dtype=np.int32),
    }
    contract = NativeContract()
    replies = [contract.reply(task(), [row]) for row in rows_of(outputs, 2)]
    assert [(r.text, r.num_output_tokens, r.finish_reason.value) for r in replies] == [
        ("a", 3, "eos"),
        ("b", 5, "length"),
    ]
