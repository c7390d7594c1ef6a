"""The shipped models served by Triton: generator, PRM ('reward') and ORM ('reward_orm')."""

import numpy as np
import pytest
import tritonclient.http as http
from tritonclient.utils import InferenceServerException

from client.api import ScaffoldingClient

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def shipped_models_only(triton):
    if not triton.uses_shipped_models:
        pytest.fail("these tests need the shipped models in models/")


def score(client, model, question, responses):
    rows = len(responses)
    tensors = []
    for name, values in [("query", [question] * rows), ("response", responses)]:
        tensor = http.InferInput(name, [rows, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[v] for v in values], dtype=np.object_))
        tensors.append(tensor)
    reply = client.infer(model, tensors)
    counts = reply.as_numpy("num_steps").reshape(-1)
    steps = [reply.as_numpy("step_scores")[row, : counts[row]].tolist() for row in range(rows)]
    return steps, reply.as_numpy("score").reshape(-1).tolist()


def test_all_models_load(http_client, triton):
    models = ["generator", "program_generator", "reward", "reward_orm"]
    models += ["scaffolding", "scaffolding_unary", "sandbox"]
    for model in models:
        if model in triton.not_loaded:  # the launcher said why (isolation unavailable here)
            continue
        assert http_client.is_model_ready(model), model


def test_generator_at_temperature_zero_answers_the_fixed_question(triton, shipped_example):
    with ScaffoldingClient(triton.http_url, "http") as client:
        result = client.ask(shipped_example.question, "cot", {"max_tokens": 160})
    assert result.answer == str(shipped_example.answer), result.text


def test_prm_ranks_the_correct_solution_above_the_corrupted_one(http_client, shipped_example):
    example = shipped_example
    (good, bad), scores = score(
        http_client, "reward", example.question, [example.correct, example.corrupted]
    )
    assert len(good) == len(bad) == 3
    assert min(good) > min(bad)
    assert scores[0] == pytest.approx(good[-1])
    assert good[0] == pytest.approx(bad[0], abs=1e-4), "the shared first step scores the same"


def test_orm_ranks_the_correct_solution_above_the_corrupted_one(http_client, shipped_example):
    example = shipped_example
    (good, bad), (good_score, bad_score) = score(
        http_client, "reward_orm", example.question, [example.correct, example.corrupted]
    )
    assert len(good) == len(bad) == 1
    assert good_score > bad_score


def test_reward_model_refuses_mismatched_rows(http_client, shipped_example):
    query = http.InferInput("query", [2, 1], "BYTES")
    query.set_data_from_numpy(np.array([[shipped_example.question]] * 2, dtype=np.object_))
    response = http.InferInput("response", [1, 1], "BYTES")
    response.set_data_from_numpy(np.array([[shipped_example.correct]], dtype=np.object_))
    with pytest.raises(InferenceServerException):
        http_client.infer("reward", [query, response])
