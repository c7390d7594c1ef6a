"""Bad input over both protocols: every case is refused as the client's error, naming the
field, with no Python class name or traceback in the message; and one bad row never
fails the requests batched with it."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import tritonclient.grpc as grpc
import tritonclient.http as http
from tritonclient.utils import InferenceServerException

from client.api import ScaffoldingClient

from .engines import final_responses

pytestmark = pytest.mark.integration

QUESTION = "Tom has 5 apples. He buys 3 more apples. How many apples does Tom have now?"
DEEP = "[" * 10000 + "]" * 10000

# (name, method, method_parameters JSON text or None, extra tensors, the field the error names)
CASES = [
    ("empty question", None, None, {"text_input": ""}, "text_input"),
    ("blank question", None, None, {"text_input": "   \n "}, "text_input"),
    (
        "question past max_question_chars",
        None,
        None,
        {"text_input": "Tom has 5 apples. " * 500},
        "text_input",
    ),
    ("question not UTF-8", None, None, {"text_input": b"\xff\xfe apples"}, "text_input"),
    ("two questions", None, None, {"text_input": [QUESTION, QUESTION]}, "text_input"),
    ("unknown method", "telepathy", None, {}, "method"),
    ("empty method", "", None, {}, "method"),
    ("method_parameters not JSON", None, "{samples: 4", {}, "method_parameters"),
    ("method_parameters an array", None, "[1, 2]", {}, "method_parameters"),
    ("method_parameters a string", None, '"samples"', {}, "method_parameters"),
    ("method_parameters 10,000 deep", None, DEEP, {}, "method_parameters"),
    ("method_parameters 70 KB", None, json.dumps({"pad": "x" * 70000}), {}, "method_parameters"),
    ("seed negative", None, '{"seed": -1}', {}, "seed"),
    ("seed past 64 bits", None, json.dumps({"seed": 2**64}), {}, "seed"),
    ("seed a boolean", None, '{"seed": true}', {}, "seed"),
    ("seed a fraction", None, '{"seed": 1.5}', {}, "seed"),
    ("seed a string", None, '{"seed": "7"}', {}, "seed"),
    ("deadline zero", None, None, {"deadline_s": 0.0}, "deadline_s"),
    ("deadline negative", None, None, {"deadline_s": -1.0}, "deadline_s"),
    ("deadline NaN", None, None, {"deadline_s": float("nan")}, "deadline_s"),
    ("deadline infinite", None, None, {"deadline_s": float("inf")}, "deadline_s"),
    ("deadline past the maximum", None, '{"deadline_s": 1e9}', {}, "deadline_s"),
    ("deadline a string", None, '{"deadline_s": "soon"}', {}, "deadline_s"),
    ("stream on the unary model", None, None, {"stream": True}, "stream"),
    ("stream a string", None, '{"stream": "yes"}', {}, "stream"),
    ("reward model not allowed", "best_of_n", '{"reward_model": "generator"}', {}, "reward_model"),
    ("reward model a number", "best_of_n", '{"reward_model": 5}', {}, "reward_model"),
    ("samples past the cap", None, '{"samples": 65}', {}, "samples"),
    ("samples zero", None, '{"samples": 0}', {}, "samples"),
    ("samples negative", None, '{"samples": -3}', {}, "samples"),
    ("samples a string", None, '{"samples": "8"}', {}, "samples"),
    ("samples a boolean", None, '{"samples": true}', {}, "samples"),
    ("samples a fraction", None, '{"samples": 2.5}', {}, "samples"),
    ("samples past 32 bits", None, json.dumps({"samples": 2**40}), {}, "samples"),
    ("temperature negative", None, '{"temperature": -0.5}', {}, "temperature"),
    ("temperature NaN", None, '{"temperature": NaN}', {}, "temperature"),
    ("temperature infinite", None, '{"temperature": Infinity}', {}, "temperature"),
    ("temperature a string", None, '{"temperature": "hot"}', {}, "temperature"),
    ("top_p zero", None, '{"top_p": 0}', {}, "top_p"),
    ("top_p above one", None, '{"top_p": 1.5}', {}, "top_p"),
    ("top_k negative", None, '{"top_k": -1}', {}, "top_k"),
    ("top_k 2**31", None, json.dumps({"top_k": 2**31}), {}, "top_k"),
    ("top_k 10**20", None, json.dumps({"top_k": 10**20}), {}, "top_k"),
    ("top_k 2**32+5", None, json.dumps({"top_k": 2**32 + 5}), {}, "top_k"),
    ("max_tokens zero", None, '{"max_tokens": 0}', {}, "max_tokens"),
    ("max_tokens past the cap", None, '{"max_tokens": 1025}', {}, "max_tokens"),
    (
        "max_tokens past the model's context",
        None,
        '{"max_tokens": 600, "samples": 2}',
        {},
        "max_tokens",
    ),
    ("unknown knob", None, '{"beams": 4}', {}, "beams"),
    ("mcts exploration NaN", "mcts", '{"exploration": NaN}', {}, "exploration"),
    ("mcts unknown value", "mcts", '{"value": "oracle"}', {}, "value"),
    ("mcts no iterations", "mcts", '{"iterations": 0}', {}, "iterations"),
    ("mcts too deep", "mcts", '{"max_depth": 33}', {}, "max_depth"),
    ("beam wider than samples", "beam_search", '{"samples": 4, "beam_width": 8}', {}, "beam_width"),
    ("beam search no steps", "beam_search", '{"max_steps": 0}', {}, "max_steps"),
    ("dvts subtrees uneven", "dvts", '{"samples": 8, "beam_width": 3}', {}, "beam_width"),
    ("unknown aggregation", "best_of_n", '{"aggregation": "median"}', {}, "aggregation"),
    (
        "tree of thoughts too wide",
        "tree_of_thoughts",
        '{"children_per_node": 65}',
        {},
        "children_per_node",
    ),
]
CLASS_NAME = re.compile(r"\b[A-Z][A-Za-z]*(Error|Exception)\b|Traceback|File \"")


def _inputs(module, method, method_parameters, extra):
    values = {"text_input": QUESTION, **extra}
    if method is not None:
        values["method"] = method
    if method_parameters is not None:
        values["method_parameters"] = method_parameters
    tensors = []
    for name, value in values.items():
        if isinstance(value, (str, bytes, list)):
            items = value if isinstance(value, list) else [value]
            array = np.array(
                [v.encode() if isinstance(v, str) else v for v in items], dtype=np.object_
            )
            dtype = "BYTES"
        elif isinstance(value, bool):
            array, dtype = np.array([value]), "BOOL"
        else:
            array, dtype = np.array([value], dtype=np.float32), "FP32"
        tensor = module.InferInput(name, list(array.shape), dtype)
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    return tensors


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize(
    ("name", "method", "method_parameters", "extra", "field"), CASES, ids=[c[0] for c in CASES]
)
def test_bad_input_is_the_clients_error_naming_the_field(
    triton, protocol, name, method, method_parameters, extra, field
):
    module = http if protocol == "http" else grpc
    url = triton.http_url if protocol == "http" else triton.grpc_url
    with (
        module.InferenceServerClient(url) as client,
        pytest.raises(InferenceServerException) as refused,
    ):
        client.infer("scaffolding_unary", _inputs(module, method, method_parameters, extra))
    message, status = refused.value.message() or "", str(refused.value.status())
    assert field in message, message
    assert status in ("400", "StatusCode.INVALID_ARGUMENT"), (status, message)
    assert not CLASS_NAME.search(message), message


def test_the_same_knobs_as_request_parameters_are_checked_too(triton):
    """The generate extension's "parameters" arrive as Triton request parameters."""
    with http.InferenceServerClient(triton.http_url) as client:
        for parameters, field in (
            ({"samples": 65}, "samples"),
            ({"seed": -1}, "seed"),
            ({"bogus": 1}, "bogus"),
        ):
            with pytest.raises(InferenceServerException, match=field):
                client.infer(
                    "scaffolding_unary", _inputs(http, None, None, {}), parameters=parameters
                )


def _generation_inputs(temperature: float, seed: int) -> list:
    tensors = []
    for name, value, dtype in (
        (
            "text_input",
            np.array([[f"Question: {QUESTION}\nAnswer:\n".encode()]], dtype=np.object_),
            "BYTES",
        ),
        ("max_tokens", np.array([[64]], dtype=np.int32), "INT32"),
        ("temperature", np.array([[temperature]], dtype=np.float32), "FP32"),
        ("seed", np.array([[seed]], dtype=np.uint64), "UINT64"),
    ):
        tensor = grpc.InferInput(name, list(value.shape), dtype)
        tensor.set_data_from_numpy(value)
        tensors.append(tensor)
    return tensors


def test_a_tiny_temperature_co_batched_with_good_requests_fails_nobody(triton):
    """Temperature 1e-40 overflowed the sampler and failed the whole dynamic batch; it is
    now sampling's limit as the temperature goes to 0 (greedy), and its neighbours finish."""
    rows = [(0.8, seed) for seed in range(8)] + [(1e-40, 99), (0.0, 0)]
    finals = final_responses(
        triton.grpc_url, "generator", [_generation_inputs(t, s) for t, s in rows]
    )
    texts = [final.as_numpy("text_output").reshape(-1)[0].decode() for final in finals]
    assert all(texts)
    assert texts[-2] == texts[-1]  # the tiny temperature wrote the greedy text
    with ScaffoldingClient(triton.http_url, "http") as scaffolding:
        result = scaffolding.ask(QUESTION, "majority_vote", {"samples": 4, "temperature": 1e-40})
    assert result.account["status"] == "ok"
