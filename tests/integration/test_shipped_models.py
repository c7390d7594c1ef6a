"""The shipped models served by Triton: generator, PRM ('reward') and ORM ('reward_orm')."""

import numpy as np
import pytest
import tritonclient.grpc as grpc
import tritonclient.http as http
from tritonclient.utils import InferenceServerException

from client.api import ScaffoldingClient

from .engines import final_responses

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


def _batch(columns: dict[str, tuple[list, str]]) -> list:
    """One request of several prompts: every input [rows, 1], as max_batch_size has it."""
    tensors = []
    for name, (values, dtype) in columns.items():
        array = np.array([[value] for value in values], dtype=TYPES[dtype])
        tensor = grpc.InferInput(name, list(array.shape), dtype)
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    return tensors


TYPES = {
    "BYTES": np.object_,
    "INT32": np.int32,
    "FP32": np.float32,
    "UINT64": np.uint64,
    "BOOL": np.bool_,
}


def test_the_generator_takes_a_batch_with_sampling_values_per_prompt(triton, shipped_example):
    """max_batch_size lets a client send B prompts in one request, each input [B, 1] (as
    TensorRT-LLM's sampling inputs): each prompt gets its own max_tokens, temperature and
    seed, and the answer has one row per prompt."""
    prompt = f"Question: {shipped_example.question}\nAnswer:\n".encode()
    max_tokens = [4, 160, 160]
    (batched,) = final_responses(
        triton.grpc_url,
        "generator",
        [
            _batch(
                {
                    "text_input": ([prompt] * 3, "BYTES"),
                    "max_tokens": (max_tokens, "INT32"),
                    "temperature": ([0.0, 0.0, 1.0], "FP32"),
                    "seed": ([1, 1, 2], "UINT64"),
                    "exclude_input_in_output": ([True] * 3, "BOOL"),
                }
            )
        ],
    )
    counts = batched.as_numpy("num_output_tokens").reshape(-1).tolist()
    texts = [text.decode() for text in batched.as_numpy("text_output").reshape(-1)]
    reasons = [reason.decode() for reason in batched.as_numpy("finish_reason").reshape(-1)]
    assert counts[0] == 4 and reasons[0] == "length"
    assert reasons[1] == "eos" and counts[1] < 160
    assert f"\\boxed{{{shipped_example.answer}}}" in texts[1]  # greedy: the fixed answer
    assert texts[0] and texts[1].startswith(texts[0])


@pytest.mark.parametrize("flag", ["stream", "exclude_input_in_output"])
def test_a_batch_whose_prompts_disagree_on_a_request_flag_is_refused_naming_it(triton, flag):
    inputs = _batch(
        {
            "text_input": ([b"Question: Tom has 3 pens.\nAnswer:\n"] * 2, "BYTES"),
            "max_tokens": ([8, 8], "INT32"),
            flag: ([True, False], "BOOL"),
        }
    )
    with pytest.raises(InferenceServerException, match=f"{flag}: must be the same for every"):
        final_responses(triton.grpc_url, "generator", [inputs])
