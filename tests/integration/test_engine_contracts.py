"""Every method over every generation contract, through a real tritonserver: this project's
generator, TensorRT-LLM fixtures (v0.14 and current, decoupled and not, the BLS model, the
LLM-API model), the vLLM backend fixture, and a real OpenAI-compatible server."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from functools import cache

import numpy as np
import pytest
import tritonclient.grpc as grpc
import tritonclient.http as http
from tritonclient.utils import InferenceServerException

from client.api import ScaffoldingClient, ScaffoldingError

from .engines import CANCELLABLE, CUSTOM_FORMAT, TARGETS, model_name, stream_responses

pytestmark = pytest.mark.integration

QUESTION = (
    "Mia owns 33 eggs. She loses 19 eggs. She finds 29 more eggs. "
    "She gives 19 eggs to a neighbor. How many eggs does Mia have now?"
)
METHODS = {
    "cot": {"max_tokens": 96},
    "majority_vote": {"samples": 3, "max_tokens": 96},
    "best_of_n": {"samples": 2, "max_tokens": 96},
    "weighted_best_of_n": {"samples": 2, "max_tokens": 96},
    "beam_search": {"samples": 4, "beam_width": 2, "max_steps": 6, "max_tokens": 48},
    "dvts": {"samples": 4, "beam_width": 2, "max_steps": 6, "max_tokens": 48},
    "mcts": {"iterations": 3, "children_per_node": 2, "max_depth": 6, "max_tokens": 48},
    "tree_of_thoughts": {"children_per_node": 2, "beam_width": 2, "max_depth": 6, "max_tokens": 48},
}
STEPWISE = {"beam_search", "dvts", "mcts", "tree_of_thoughts"}
SEED = 5
FIXTURES = [target for target in TARGETS if target not in ("native", "native_folded", "openai")]


@cache
def _ask(url: str, target: str, method: str):
    with ScaffoldingClient(url, "http", unary_model=model_name(target)) as client:
        return client.ask(QUESTION, method, METHODS[method], seed=SEED)


def ask(triton, target: str, method: str):
    return _ask(triton.http_url, target, method)


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("target", list(TARGETS))
def test_every_method_runs_over_every_generation_contract(triton, target, method):
    result = ask(triton, target, method)
    account = result.account
    assert account["status"] == "ok"
    assert account["sub_requests_by_model"]["generation"] >= 1
    assert account["output_tokens"] > 0 and account["prompt_tokens"] > 0
    assert set(account["token_counts_from"]) <= {"engine", "log_probs", "tokenizer"}
    assert result.text.strip()
    if method in STEPWISE and method != "mcts":
        assert len(account["steps"]) > 1, "the search must go on after its first step"


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("target", FIXTURES)
def test_a_fixture_gives_the_native_generators_text_and_token_counts(triton, target, method):
    """The fixtures generate on the native generator, so where the adapters restore what
    each contract leaves out (finish reasons, echoed prompts, kept stop words, token counts),
    every method must end exactly as it does over the native generator: beam search too,
    though no TensorRT-LLM release says why a generation ended."""
    native, result = ask(triton, "native", method), ask(triton, target, method)
    assert result.text == native.text
    assert result.answer == native.answer
    for key in ("output_tokens", "prompt_tokens", "tasks", "sub_requests"):
        assert result.account[key] == native.account[key], key
    if method in STEPWISE:
        assert len(result.account["steps"]) == len(native.account["steps"])


@pytest.mark.parametrize("method", list(METHODS))
def test_folded_generations_write_what_one_request_per_generation_writes(triton, method):
    """fold_generations sends the generations of a step as the rows of one request, each
    row with its own seed: every method ends exactly as it does with a request per
    generation, in fewer generator requests wherever a step has several generations."""
    unfolded, folded = ask(triton, "native", method), ask(triton, "native_folded", method)
    assert folded.text == unfolded.text
    assert folded.answer == unfolded.answer
    for key in ("output_tokens", "prompt_tokens", "tasks"):
        assert folded.account[key] == unfolded.account[key], key
    if method in STEPWISE:
        assert len(folded.account["steps"]) == len(unfolded.account["steps"])
    requests = lambda result: result.account["sub_requests_by_model"]["generation"]
    if method == "cot":
        assert requests(folded) == requests(unfolded) == 1
    else:
        assert requests(folded) < requests(unfolded)


def test_a_fold_is_one_generator_request_and_a_step_that_may_settle_is_not_folded(
    triton, request_outcomes
):
    """majority@8 is one request to the generator; adaptive consistency reads each sample
    the moment it is done (it stops once the vote is settled), so its samples go alone."""
    with ScaffoldingClient(triton.http_url, "http", unary_model=model_name("native_folded")) as c:
        before = request_outcomes("generator")
        vote = c.ask(QUESTION, "majority_vote", {"samples": 8, "max_tokens": 96}, seed=SEED)
        assert request_outcomes("generator") == (before[0] + 1, before[1])
        adaptive = c.ask(
            QUESTION, "adaptive_consistency", {"samples": 8, "max_tokens": 96}, seed=SEED
        )
    assert vote.account["sub_requests_by_model"] == {"generation": 1}
    assert len(vote.account["candidates"]) == 8
    assert adaptive.account["sub_requests_by_model"] == {"generation": adaptive.account["tasks"]}
    assert adaptive.account["tasks"] > 1


def test_token_counts_say_where_they_come_from(triton):
    sources = {
        target: set(ask(triton, target, "majority_vote").account["token_counts_from"])
        for target in TARGETS
    }
    assert sources["native"] == {"engine"}
    assert sources["trtllm_v0.14"] == {"log_probs"}  # no count outputs before the current release
    assert sources["trtllm_current"] == {"engine"}
    assert sources["trtllm_llmapi"] == {"tokenizer"}  # neither counts nor per-token log-probs
    assert sources["vllm"] == {"engine"}
    assert sources["openai"] == {"engine"}  # the server's usage


def test_the_real_openai_server_writes_what_the_native_generator_writes(triton):
    """transformers serve runs the same model with the same sampling, so greedy decoding and
    seeded samples agree with the native generator; its usage counts the end-of-text token,
    which the native generator does not count."""
    for method in ("cot", "majority_vote", "beam_search"):
        native, served = ask(triton, "native", method), ask(triton, "openai", method)
        assert served.answer == native.answer, method
        assert served.text == native.text, method
    cot = ask(triton, "openai", "cot").account
    assert cot["output_tokens"] == ask(triton, "native", "cot").account["output_tokens"] + 1


def test_the_chat_api_writes_what_the_native_generator_writes(triton):
    """Over /v1/chat/completions the server's chat template makes the prompt (the
    scaffolding model sends the bare question): the same texts as the native generator."""
    for method in ("cot", "majority_vote"):
        native = ask(triton, "native", method)
        with ScaffoldingClient(
            triton.http_url, "http", unary_model="scaffolding_openai_chat"
        ) as client:
            chat = client.ask(QUESTION, method, METHODS[method], seed=SEED)
        assert chat.text == native.text, method
        assert chat.account["status"] == "ok"


# -- the fixtures behave like the real models ----------------------------------------------


def _tensor(module, name, value, dtype):
    tensor = module.InferInput(name, list(value.shape), dtype)
    tensor.set_data_from_numpy(value)
    return tensor


def test_trtllm_v014_refuses_inputs_it_does_not_declare_and_echoes_the_prompt(http_client):
    prompt = f"Question: {QUESTION}\nAnswer:\n"
    inputs = [
        _tensor(http, "text_input", np.array([[prompt]], dtype=np.object_), "BYTES"),
        _tensor(http, "max_tokens", np.array([[24]], dtype=np.int32), "INT32"),
    ]
    reply = http_client.infer("trtllm_v014_ensemble", inputs)
    text = reply.as_numpy("text_output").reshape(-1)[0].decode()
    assert text.startswith(prompt) and len(text) > len(prompt)
    with pytest.raises(InferenceServerException, match="exclude_input_in_output"):
        excluded = _tensor(http, "exclude_input_in_output", np.array([[True]]), "BOOL")
        http_client.infer("trtllm_v014_ensemble", [*inputs, excluded])
    with pytest.raises(InferenceServerException, match="finish_reason"):
        http_client.infer(
            "trtllm_v014_ensemble", inputs, outputs=[http.InferRequestedOutput("finish_reason")]
        )


def test_vllm_fixture_keeps_vllms_defaults(triton):
    """Without max_tokens vLLM writes at most 16 tokens; without exclude_input_in_output a
    non-streamed text starts with the prompt; streamed, each response carries only the new
    text. (Only a seed is given: vLLM samples at temperature 1 by default, and the streamed
    text is compared with the whole one.)"""
    prompt = f"Question: {QUESTION}\nAnswer:\n"
    text_input = _tensor(grpc, "text_input", np.array([prompt], dtype=np.object_), "BYTES")
    seeded = _tensor(
        grpc, "sampling_parameters", np.array(['{"seed": 7}'], dtype=np.object_), "BYTES"
    )
    count = _tensor(grpc, "return_num_output_tokens", np.array([True]), "BOOL")
    [whole] = stream_responses(triton.grpc_url, "vllm_model", [text_input, seeded, count])
    assert whole.as_numpy("text_output")[0].decode().startswith(prompt)
    assert int(whole.as_numpy("num_output_tokens")[0]) == 16
    stream = _tensor(grpc, "stream", np.array([True]), "BOOL")
    deltas = stream_responses(triton.grpc_url, "vllm_model", [text_input, seeded, count, stream])
    assert len(deltas) > 1
    streamed = "".join(r.as_numpy("text_output")[0].decode() for r in deltas)
    assert streamed == whole.as_numpy("text_output")[0].decode()[len(prompt) :]


# -- cancellation reaches the engine --------------------------------------------------------


def _fixture_stops(triton) -> float:
    with urllib.request.urlopen(
        f"http://localhost:{triton.metrics_port}/metrics", timeout=5
    ) as reply:
        metrics = reply.read().decode()
    # on Triton 2.51 a BLS caller cannot cancel a sub-request; the LLM-API stop request can
    pattern = rf'fixture_stops_total{{how="stop_request",model="{CANCELLABLE}"}} ([0-9.e+]+)'
    found = re.search(pattern, metrics)
    return float(found.group(1)) if found else 0.0


def _wait_for_stops(triton, target: float, timeout_s: float = 15.0) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        now = _fixture_stops(triton)
        if now >= target:
            return now
        time.sleep(0.2)
    return _fixture_stops(triton)


def test_a_cancelled_request_cancels_its_decoupled_sub_requests(triton):
    """The client cancels its stream while the samples are being generated; the scaffolding
    model stops waiting for them and tells the engine to stop too (LLM-API: a stop request;
    Triton newer than 2.51: BLS cancellation), which the fixture counts."""
    before = _fixture_stops(triton)
    streaming = model_name(CANCELLABLE, streaming=True)
    params = json.dumps({"samples": 4, "max_tokens": 200})
    inputs = [
        _tensor(grpc, "text_input", np.array([QUESTION], dtype=np.object_), "BYTES"),
        _tensor(grpc, "method_parameters", np.array([params], dtype=np.object_), "BYTES"),
    ]
    with grpc.InferenceServerClient(triton.grpc_url) as client:
        client.start_stream(callback=lambda result, error: None)
        client.async_stream_infer(streaming, inputs)
        time.sleep(0.4)  # the fixture streams each sample's ~60 tokens over about 1.2 s
        client.stop_stream(cancel_requests=True)
    # all four samples were in flight: each is stopped at the engine
    assert _wait_for_stops(triton, before + 4) == before + 4


def test_a_request_past_its_deadline_cancels_its_decoupled_sub_requests(triton):
    before = _fixture_stops(triton)
    unary = model_name(CANCELLABLE)
    with (
        ScaffoldingClient(triton.http_url, "http", unary_model=unary) as client,
        pytest.raises(ScaffoldingError, match="deadline"),
    ):
        client.ask(QUESTION, "majority_vote", {"samples": 4, "max_tokens": 200}, deadline_s=0.5)
    assert _wait_for_stops(triton, before + 4) == before + 4


# -- the reward model scores the format the generator was prompted with ----------------------


def test_the_reward_model_scores_with_the_scaffolding_prompt_format(triton, http_client):
    """A scaffolding model with its own prompt format sends it to the reward model; scoring
    the same solutions directly reproduces the account's scores with that format and not
    with the default one."""
    with ScaffoldingClient(
        triton.http_url, "http", unary_model="scaffolding_custom_format"
    ) as client:
        result = client.ask(QUESTION, "best_of_n", {"samples": 2, "max_tokens": 96}, seed=SEED)
    candidates = result.account["candidates"]

    def scores(parameters: dict | None) -> list[list[float]]:
        inputs = [
            _tensor(
                http, "query", np.array([[QUESTION]] * len(candidates), dtype=np.object_), "BYTES"
            ),
            _tensor(
                http,
                "response",
                np.array([[c["text"]] for c in candidates], dtype=np.object_),
                "BYTES",
            ),
        ]
        reply = http_client.infer("reward", inputs, parameters=parameters)
        counts = reply.as_numpy("num_steps").reshape(-1)
        return [row[: counts[i]].tolist() for i, row in enumerate(reply.as_numpy("step_scores"))]

    custom = scores(CUSTOM_FORMAT)
    default = scores(None)
    for candidate, expected in zip(candidates, custom):
        assert candidate["step_scores"] == pytest.approx(expected, abs=1e-6)
    assert custom != default
