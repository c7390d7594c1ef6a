"""The shipped models served by Triton: generator, PRM ('reward') and ORM ('reward_orm')."""

import numpy as np
import pytest
import tritonclient.http as http
from tritonclient.utils import InferenceServerException

from client.api import ScaffoldingClient

pytestmark = pytest.mark.integration

# a fixed test-split question the shipped generator answers correctly at temperature 0
QUESTION = "Mia owns 57 eggs. She loses 44 eggs. She finds 94 more eggs. She trades away 79 eggs. How many eggs does Mia have now?"
CORRECT = "Mia has 57 - 44 = 13 eggs.\n\nMia has 13 + 94 = 107 eggs.\n\nMia has 107 - 79 = 28 eggs. The answer is \\boxed{28}."
CORRUPTED = "Mia has 57 - 44 = 13 eggs.\n\nMia has 13 + 94 = 117 eggs.\n\nMia has 117 - 79 = 38 eggs. The answer is \\boxed{38}."


@pytest.fixture(autouse=True)
def shipped_models_only(triton):
    if not triton.uses_shipped_models:
        pytest.fail("these tests need the shipped models in models/")


def score(client, model, responses):
    rows = len(responses)
    tensors = []
    for name, values in [("query", [QUESTION] * rows), ("response", responses)]:
        tensor = http.InferInput(name, [rows, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[v] for v in values], dtype=np.object_))
        tensors.append(tensor)
    reply = client.infer(model, tensors)
    counts = reply.as_numpy("num_steps").reshape(-1)
    steps = [reply.as_numpy("step_scores")[row, : counts[row]].tolist() for row in range(rows)]
    return steps, reply.as_numpy("score").reshape(-1).tolist()


def test_all_models_load(http_client):
    for model in ("generator", "reward", "reward_orm", "scaffolding", "scaffolding_unary"):
        assert http_client.is_model_ready(model), model


def test_generator_at_temperature_zero_answers_the_fixed_question(triton):
    with ScaffoldingClient(triton.http_url, "http") as client:
        result = client.ask(QUESTION, "cot", {"max_tokens": 160})
    assert result.answer == "28", result.text


def test_prm_ranks_the_correct_solution_above_the_corrupted_one(http_client):
    (good, bad), scores = score(http_client, "reward", [CORRECT, CORRUPTED])
    assert len(good) == len(bad) == 3
    assert min(good) > min(bad)
    assert scores[0] == pytest.approx(good[-1])
    assert good[0] == pytest.approx(bad[0], abs=1e-4), "the shared first step scores the same"


def test_orm_ranks_the_correct_solution_above_the_corrupted_one(http_client):
    (good, bad), (good_score, bad_score) = score(http_client, "reward_orm", [CORRECT, CORRUPTED])
    assert len(good) == len(bad) == 1
    assert good_score > bad_score


def test_reward_model_refuses_mismatched_rows(http_client):
    query = http.InferInput("query", [2, 1], "BYTES")
    query.set_data_from_numpy(np.array([[QUESTION], [QUESTION]], dtype=np.object_))
    response = http.InferInput("response", [1, 1], "BYTES")
    response.set_data_from_numpy(np.array([[CORRECT]], dtype=np.object_))
    with pytest.raises(InferenceServerException):
        http_client.infer("reward", [query, response])
