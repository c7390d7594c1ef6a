"""cot and majority_vote end-to-end through a real tritonserver: scaffolding -> BLS -> generator."""

import concurrent.futures
import json
import re
import threading
import time
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpc
import tritonclient.http as http
from tritonclient.utils import InferenceServerException

from client.api import ScaffoldingClient, ScaffoldingError

from .engines import model_name, stream_responses

pytestmark = pytest.mark.integration
QUESTION = "Tom has 13 apples and buys 8 more. How many apples does Tom have now?"
# four steps: each sample writes about 60 tokens
EGGS = (
    "Mia owns 33 eggs. She loses 19 eggs. She finds 29 more eggs. "
    "She gives 19 eggs to a neighbor. How many eggs does Mia have now?"
)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_cot_answers_through_triton(triton, protocol):
    url = triton.grpc_url if protocol == "grpc" else triton.http_url
    with ScaffoldingClient(url, protocol) as client:
        result = client.ask(QUESTION, "cot", {"max_tokens": 64})
    assert result.account["status"] == "ok"
    assert result.account["sub_requests"] == 1
    assert result.account["output_tokens"] > 0
    assert result.text == result.account["candidates"][0]["text"]
    assert result.answer == result.account["answer"]


def test_majority_vote_makes_eight_sub_requests_and_streams_progress(triton, generator_requests):
    before = generator_requests()
    events = []
    with ScaffoldingClient(triton.grpc_url, "grpc") as client:
        result = client.ask(
            QUESTION,
            "majority_vote",
            {"samples": 8, "max_tokens": 64},
            seed=5,
            on_event=events.append,
        )
    assert generator_requests() - before == 8
    account = result.account
    assert account["sub_requests"] == 8 and account["sub_requests_by_model"] == {"generation": 8}
    assert len(account["candidates"]) == 8
    voted = sum(group["votes"] for group in account["tally"]["groups"])
    assert voted + len(account["tally"]["abstained"]) == 8
    samples = [e for e in events if e["kind"] == "sample"]
    assert sorted(e["finished"] for e in samples) == list(range(1, 9))
    assert events[-1]["kind"] == "tally"


def test_same_seed_replays_over_both_protocols(triton):
    params = {"samples": 4, "max_tokens": 48}
    with (
        ScaffoldingClient(triton.grpc_url, "grpc") as grpc_client,
        ScaffoldingClient(triton.http_url, "http") as http_client,
    ):
        first = grpc_client.ask(QUESTION, "majority_vote", params, seed=11)
        second = http_client.ask(QUESTION, "majority_vote", params, seed=11)
        other = http_client.ask(QUESTION, "majority_vote", params, seed=12)
    texts = lambda r: [c["text"] for c in r.account["candidates"]]
    assert texts(first) == texts(second)
    assert texts(first) != texts(other)


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("majority_vote", {"samples": 8, "max_tokens": 96}),
        ("beam_search", {"samples": 4, "beam_width": 2, "max_tokens": 96}),
        ("adaptive_consistency", {"samples": 16, "max_tokens": 96}),
    ],
)
def test_replay_is_exact_under_concurrent_load(triton, method, params):
    """The same request seed gives the same answer and account (everything but timings)
    alone and while other requests share the engine's batch and the reward model's."""

    def ask(method: str, params: dict, seed: int):
        with ScaffoldingClient(triton.grpc_url, "grpc") as client:
            return client.ask(EGGS, method, params, seed=seed)

    def replayable(result) -> dict:
        timings = ("wall_seconds", "phase_seconds")
        return {key: value for key, value in result.account.items() if key not in timings}

    alone = ask(method, params, 21)
    load = [
        ("majority_vote", {"samples": 16, "max_tokens": 200}),
        ("best_of_n", {"samples": 8, "max_tokens": 200}),
        ("beam_search", {"samples": 4, "beam_width": 2, "max_tokens": 200}),
        ("majority_vote", {"samples": 32, "max_tokens": 200}),
    ]
    with concurrent.futures.ThreadPoolExecutor(len(load) + 1) as pool:
        busy = [pool.submit(ask, m, p, 100 + i) for i, (m, p) in enumerate(load)]
        time.sleep(0.2)  # the load is in the engine's batch first
        loaded = pool.submit(ask, method, params, 21).result(timeout=300)
        assert all(future.result(timeout=300).account["status"] == "ok" for future in busy)
    assert loaded.answer == alone.answer
    assert replayable(loaded) == replayable(alone)


def test_one_instance_serves_concurrent_streaming_requests(triton, generator_requests):
    def ask(seed):
        with ScaffoldingClient(triton.grpc_url, "grpc") as client:
            return client.ask(
                QUESTION, "majority_vote", {"samples": 2, "max_tokens": 32}, seed=seed
            )

    before = generator_requests()
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(ask, range(6)))
    assert all(r.account["status"] == "ok" for r in results)
    assert generator_requests() - before == 12


def test_request_past_its_deadline_fails_cleanly_and_the_server_keeps_serving(triton):
    with ScaffoldingClient(triton.grpc_url, "grpc") as client:
        with pytest.raises(ScaffoldingError, match="deadline"):
            client.ask(
                QUESTION, "majority_vote", {"samples": 16, "max_tokens": 256}, deadline_s=0.05
            )
        assert client.ask(QUESTION, "cot", {"max_tokens": 16}).account["status"] == "ok"
    with ScaffoldingClient(triton.http_url, "http") as client:
        with pytest.raises(ScaffoldingError, match="deadline"):
            client.ask(
                QUESTION, "majority_vote", {"samples": 16, "max_tokens": 256}, deadline_s=0.05
            )
        assert client.ask(QUESTION, "cot", {"max_tokens": 16}).account["status"] == "ok"


@pytest.mark.parametrize(
    "method, params, field",
    [
        ("no_such_method", {}, "method"),
        ("majority_vote", {"samples": 10_000}, "samples"),
        ("majority_vote", {"max_tokens": 0}, "max_tokens"),
        ("majority_vote", {"temperature": "hot"}, "temperature"),
        ("cot", {"bogus": 1}, "bogus"),
    ],
)
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_bad_input_is_an_invalid_argument_naming_the_field(triton, protocol, method, params, field):
    url = triton.grpc_url if protocol == "grpc" else triton.http_url
    with ScaffoldingClient(url, protocol) as client, pytest.raises(ScaffoldingError, match=field):
        client.ask(QUESTION, method, params)


def _infer_input(name, value, dtype):
    tensor = http.InferInput(name, list(value.shape), dtype)
    tensor.set_data_from_numpy(value)
    return tensor


def test_raw_tensors_errors_and_request_parameters(http_client):
    question = _infer_input("text_input", np.array([QUESTION], dtype=np.object_), "BYTES")
    # method parameters as Triton request parameters instead of the JSON tensor
    reply = http_client.infer(
        "scaffolding_unary",
        [question],
        parameters={"method": "majority_vote", "samples": 2, "max_tokens": 16},
    )
    assert json.loads(reply.as_numpy("account")[0])["sub_requests"] == 2
    bad_json = _infer_input("method_parameters", np.array(["{not json"], dtype=np.object_), "BYTES")
    with pytest.raises(InferenceServerException, match="method_parameters"):
        http_client.infer("scaffolding_unary", [question, bad_json])
    empty = _infer_input("text_input", np.array([""], dtype=np.object_), "BYTES")
    with pytest.raises(InferenceServerException, match="text_input"):
        http_client.infer("scaffolding_unary", [empty])
    stream = _infer_input("stream", np.array([True]), "BOOL")
    with pytest.raises(InferenceServerException, match="stream"):
        http_client.infer("scaffolding_unary", [question, stream])


def _grpc_input(name, value, dtype):
    tensor = grpc.InferInput(name, list(value.shape), dtype)
    tensor.set_data_from_numpy(value)
    return tensor


def test_generator_speaks_the_generation_contract_and_refuses_bad_input(triton):
    def inputs(max_tokens=8, **extra):
        prompt = np.array([["Question: 1 + 1?\nAnswer:\n"]], dtype=np.object_)
        tensors = [
            _grpc_input("text_input", prompt, "BYTES"),
            _grpc_input("max_tokens", np.array([[max_tokens]], dtype=np.int32), "INT32"),
        ]
        for name, (value, dtype) in extra.items():
            tensors.append(_grpc_input(name, value, dtype))
        return tensors

    sampling = {
        "temperature": (np.array([[0.8]], dtype=np.float32), "FP32"),
        "seed": (np.array([[3]], dtype=np.uint64), "UINT64"),
        "return_log_probs": (np.array([[True]]), "BOOL"),
        "exclude_input_in_output": (np.array([[True]]), "BOOL"),
    }
    [reply] = stream_responses(triton.grpc_url, "generator", inputs(**sampling))
    count = int(reply.as_numpy("num_output_tokens")[0][0])
    assert 1 <= count <= 8
    assert reply.as_numpy("output_log_probs").shape == (1, 1, count)
    assert reply.as_numpy("cum_log_probs")[0][0] == pytest.approx(
        reply.as_numpy("output_log_probs")[0, 0].sum(), abs=1e-3
    )
    assert reply.as_numpy("finish_reason")[0][0].decode() in {"eos", "length", "stop_word"}
    # streamed: one response per token with its text and log-probability, then the counts
    streamed = stream_responses(
        triton.grpc_url, "generator", inputs(**sampling, stream=(np.array([[True]]), "BOOL"))
    )
    *tokens, final = streamed
    assert len(tokens) == count and int(final.as_numpy("num_output_tokens")[0][0]) == count
    assert (
        "".join(t.as_numpy("text_output").reshape(-1)[0].decode() for t in tokens)
        == reply.as_numpy("text_output").reshape(-1)[0].decode()
    )
    assert [float(t.as_numpy("output_log_probs").reshape(-1)[0]) for t in tokens] == pytest.approx(
        reply.as_numpy("output_log_probs")[0, 0].tolist(), abs=1e-5
    )
    for bad, field in [
        (inputs(max_tokens=0), "max_tokens"),
        (inputs(top_p=(np.array([[0.0]], dtype=np.float32), "FP32")), "top_p"),
    ]:
        with pytest.raises(InferenceServerException, match=field):
            stream_responses(triton.grpc_url, "generator", bad)


def test_decoupled_models_send_only_the_outputs_a_request_asks_for(triton):
    """The Python backend drops outputs nobody asked for from a decoupled model's response
    without holding the GIL, which corrupted the stub's heap (io.requested): the models must
    not send them. Many requests, so that a stub that still did would be likely to die."""
    prompt = np.array([["Question: 1 + 1?\nAnswer:\n"]], dtype=np.object_)
    generation = [
        _grpc_input("text_input", prompt, "BYTES"),
        _grpc_input("max_tokens", np.array([[4]], dtype=np.int32), "INT32"),
        _grpc_input("stream", np.array([[True]]), "BOOL"),
    ]
    question = [
        _grpc_input("text_input", np.array([QUESTION], dtype=np.object_), "BYTES"),
        _grpc_input("method", np.array(["majority_vote"], dtype=np.object_), "BYTES"),
        _grpc_input(
            "method_parameters",
            np.array(['{"samples": 2, "max_tokens": 16}'], dtype=np.object_),
            "BYTES",
        ),
        _grpc_input("stream", np.array([True]), "BOOL"),
    ]
    for _ in range(25):
        replies = stream_responses(
            triton.grpc_url, "generator", generation, outputs=["num_output_tokens"]
        )
        assert {output.name for reply in replies for output in reply.get_response().outputs} == {
            "num_output_tokens"
        }
    [answer] = stream_responses(triton.grpc_url, "scaffolding", question, outputs=["answer"])
    assert [output.name for output in answer.get_response().outputs] == ["answer"]
    assert answer.as_numpy("answer")[0].decode()
    # the generator still serves
    [reply] = stream_responses(triton.grpc_url, "generator", generation[:2])
    assert int(reply.as_numpy("num_output_tokens")[0][0]) >= 1


def test_prometheus_metrics_count_requests_and_sub_requests(triton):
    import urllib.request

    with ScaffoldingClient(triton.http_url, "http") as client:
        client.ask(QUESTION, "majority_vote", {"samples": 2, "max_tokens": 16})

    def counted(metrics: str) -> bool:
        return any(
            line.startswith("scaffolding_requests_total{")
            and 'method="majority_vote"' in line
            and 'status="ok"' in line
            and 'model="scaffolding_unary"' in line
            for line in metrics.splitlines()
        )

    # the models write their metrics at most every 0.25 s (metrics.Throttled)
    deadline = time.monotonic() + 5
    while True:
        with urllib.request.urlopen(
            f"http://localhost:{triton.metrics_port}/metrics", timeout=10
        ) as reply:
            metrics = reply.read().decode()
        if counted(metrics) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert counted(metrics)
    assert any(line.startswith("scaffolding_sub_requests_total{") for line in metrics.splitlines())


def _post(url: str, body: dict) -> bytes:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=120) as reply:
        return reply.read()


def test_the_generate_extension_takes_the_documented_parameters_idiom(triton):
    """Triton's generate extension maps a JSON body's "parameters" to request parameters:
    the method's knobs and the request options arrive there."""
    url = f"http://{triton.http_url}/v2/models/scaffolding_unary/generate"
    body = {
        "text_input": QUESTION,
        "method": "beam_search",
        "parameters": {"samples": 4, "seed": 3},
    }
    reply = json.loads(_post(url, body))
    account = json.loads(reply["account"])
    assert account["method"] == "beam_search" and account["seed"] == 3
    assert reply["answer"] == account["answer"]
    assert account["sub_requests_by_model"]["generation"] == 4 * len(account["steps"])


def test_generate_stream_sends_progress_events_as_server_sent_events(triton):
    url = f"http://{triton.http_url}/v2/models/scaffolding/generate_stream"
    body = {
        "text_input": QUESTION,
        "method": "majority_vote",
        "parameters": {"samples": 3, "stream": True},
    }
    lines = [line for line in _post(url, body).decode().splitlines() if line.startswith("data: ")]
    payloads = [json.loads(line[len("data: ") :]) for line in lines]
    events = [json.loads(p["event"]) for p in payloads if "event" in p]
    assert [e["kind"] for e in events] == ["sample", "sample", "sample", "tally"]
    assert "account" in payloads[-1]


def test_a_request_beyond_the_admission_cap_is_refused_at_once_and_retryable(triton):
    """max_concurrent_requests=1: while one request runs, the next gets UNAVAILABLE at once
    (not a place in an unbounded queue); once it finished, the next is served."""
    slow = {"samples": 16, "max_tokens": 400, "temperature": 3.0}  # long texts: rarely an early end
    model = "scaffolding_one_at_a_time"
    running_now = threading.Event()
    with (
        concurrent.futures.ThreadPoolExecutor(1) as pool,
        ScaffoldingClient(triton.grpc_url, "grpc", streaming_model=model) as first,
        ScaffoldingClient(triton.grpc_url, "grpc", streaming_model=model) as second,
    ):
        running = pool.submit(
            first.ask, QUESTION, "majority_vote", slow, on_event=lambda _: running_now.set()
        )
        assert running_now.wait(timeout=60), "the first request never reported progress"
        refused_at = time.monotonic()
        with pytest.raises(ScaffoldingError, match=r"busy.*max_concurrent_requests"):
            second.ask(QUESTION, "cot", {"max_tokens": 16})
        assert time.monotonic() - refused_at < 2.0
        assert running.result(timeout=120).account["status"] == "ok"
        assert second.ask(QUESTION, "cot", {"max_tokens": 16}).account["status"] == "ok"


def test_a_triton_trace_shows_every_sub_request_under_its_request(triton):
    """Sub-requests carry the request's trace: Triton's trace file lists the generator and
    reward requests of a best-of-2 as children of the scaffolding request."""

    def trace_setting(level: str) -> None:
        body = json.dumps(
            {"trace_level": [level], "trace_rate": "1", "log_frequency": "1"}
        ).encode()
        url = f"http://{triton.http_url}/v2/models/scaffolding_unary/trace/setting"
        request = urllib.request.Request(
            url, data=body, method="POST", headers=triton.admin_headers
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            assert json.loads(reply.read())["trace_level"] == [level]

    before = set(triton.trace_file.parent.glob("trace.json*"))
    trace_setting("TIMESTAMPS")
    try:
        with ScaffoldingClient(triton.http_url, "http") as client:
            client.ask(QUESTION, "best_of_n", {"samples": 2, "max_tokens": 64})
    finally:
        trace_setting("OFF")
    deadline = time.monotonic() + 10
    spans: list[dict] = []
    while time.monotonic() < deadline:
        spans = [
            span
            for path in set(triton.trace_file.parent.glob("trace.json*")) - before
            for span in json.loads(path.read_text())
            if "model_name" in span
        ]
        if any(span["model_name"] == "reward" for span in spans):
            break
        time.sleep(0.2)
    [parent] = [span for span in spans if span["model_name"] == "scaffolding_unary"]
    children = sorted(span["model_name"] for span in spans if span.get("parent_id") == parent["id"])
    assert children == ["generator", "generator", "reward"]


def _generator_counters(triton) -> dict[str, float]:
    with urllib.request.urlopen(
        f"http://localhost:{triton.metrics_port}/metrics", timeout=5
    ) as reply:
        text = reply.read().decode()
    found = re.findall(r'^generator_(\w+)_total\{model="generator"\} ([0-9.e+]+)$', text, re.M)
    return {name: float(value) for name, value in found}


def _generator_settled(triton, timeout_s: float = 30.0) -> dict[str, float]:
    """The generator's counters once they stop moving (no generation left in the engine)."""
    deadline = time.monotonic() + timeout_s
    previous = _generator_counters(triton)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = _generator_counters(triton)
        if now == previous:
            return now
        previous = now
    raise AssertionError("the generator kept working")


@pytest.mark.parametrize(
    ("model", "cancel_after_s", "in_flight"),
    [("scaffolding", 0.5, 64), ("scaffolding_eight_in_flight", 1.0, 8)],
    ids=["all_in_flight", "eight_in_flight"],
)
def test_a_cancelled_majority_at_64_stops_its_unfinished_generations(
    triton, model, cancel_after_s, in_flight
):
    """majority@64, cancelled by the client part-way: the samples the engine had not
    finished then never reach it (queued sub-requests are dropped) or leave its batch at
    their next decode step (stop requests); no token is written after a cancel.

    A sample may still end between the client's cancel and the server noticing it (a poll
    every 50 ms, and the events on their way): with all 64 in the engine's batch (about 1 s
    on 2 cores; the cancel comes half-way) at least 90% of the unfinished are spared; with
    eight in flight (cancel 1 s in), at most the eight running at the cancel end, and none
    of the queued ones runs."""
    params = json.dumps({"samples": 64, "max_tokens": 400, "temperature": 1.0})
    inputs = [
        _grpc_input("text_input", np.array([EGGS], dtype=np.object_), "BYTES"),
        _grpc_input("method_parameters", np.array([params], dtype=np.object_), "BYTES"),
        _grpc_input("stream", np.array([True]), "BOOL"),
    ]
    # the samples finished at the cancel, counted by their events as they arrive (the
    # generator's counters on /metrics lag by up to 0.05 s, in which a whole wave of eight
    # can finish)
    samples_done: list[int] = []

    def on_response(result, error):
        if result is not None and result.as_numpy("event") is not None:
            event = json.loads(result.as_numpy("event")[0])
            samples_done.extend([1] if event["kind"] == "sample" else [])

    before = _generator_settled(triton)
    with grpc.InferenceServerClient(triton.grpc_url) as client:
        client.start_stream(callback=on_response)
        client.async_stream_infer(model, inputs)
        time.sleep(cancel_after_s)
        finished = len(samples_done)
        client.stop_stream(cancel_requests=True)
    after = _generator_settled(triton)
    ran = after["generations"] - before["generations"]
    stopped = after["cancelled"] - before["cancelled"]
    unfinished = 64 - finished
    spared = (64 - ran) + stopped
    print(
        f"{model}: {finished:.0f} of 64 samples finished at the cancel; of the {unfinished:.0f} "
        f"others {64 - ran:.0f} never ran and {stopped:.0f} were stopped"
    )
    assert unfinished > 0, "every sample had finished: the test needs longer generations"
    if in_flight == 64:
        assert spared >= 0.9 * unfinished
    else:
        assert unfinished - spared <= in_flight
    assert after["tokens_after_cancel"] == before["tokens_after_cancel"]


def test_a_folded_vote_past_its_deadline_stops_every_generation_of_its_folds(triton):
    """With fold_generations 8, majority@16 is two generator requests of 8 prompts. Past the
    request's deadline both are stopped as a whole: every prompt entered the engine, the
    unfinished ones leave it at their next decode step, and no token is written after."""
    folded = model_name("native_folded")
    params = {"samples": 16, "max_tokens": 400, "temperature": 1.0}
    before = _generator_settled(triton)
    with (
        ScaffoldingClient(triton.http_url, "http", unary_model=folded) as client,
        pytest.raises(ScaffoldingError, match="deadline"),
    ):
        client.ask(EGGS, "majority_vote", params, seed=2, deadline_s=0.15)
    after = _generator_settled(triton)
    assert after["generations"] - before["generations"] == 16
    stopped = after["cancelled"] - before["cancelled"]
    print(f"{stopped:.0f} of 16 folded generations were stopped at the deadline")
    assert stopped > 0, "every sample had finished: the test needs longer generations"
    assert after["tokens_after_cancel"] == before["tokens_after_cancel"]


def _streamed_texts(events: list[dict]) -> dict[str, str]:
    texts: dict[str, str] = {}
    for event in events:
        if event["kind"] == "tokens":
            texts[event["stream"]] = texts.get(event["stream"], "") + event["text"]
    return texts


def test_stream_tokens_sends_the_answer_as_the_engine_writes_it(triton):
    events: list[dict] = []
    with ScaffoldingClient(triton.grpc_url, "grpc") as client:
        result = client.ask(EGGS, "cot", {"stream_tokens": True}, on_event=events.append)
    chunks = [e for e in events if e["kind"] == "tokens"]
    assert len(chunks) > 10  # token by token, not one chunk at the end
    assert _streamed_texts(events) == {"sample 0": result.text}


def test_stream_tokens_streams_every_sample_of_a_vote(triton):
    events: list[dict] = []
    with ScaffoldingClient(triton.grpc_url, "grpc") as client:
        result = client.ask(
            EGGS,
            "majority_vote",
            {"samples": 4, "stream_tokens": True},
            seed=3,
            on_event=events.append,
        )
    texts = _streamed_texts(events)
    assert sorted(texts) == [f"sample {index}" for index in range(4)]
    assert sorted(texts.values()) == sorted(c["text"] for c in result.account["candidates"])
    assert result.text in texts.values()


def test_dynasor_cot_streams_its_chain_and_probes(triton):
    events: list[dict] = []
    with ScaffoldingClient(triton.grpc_url, "grpc") as client:
        result = client.ask(
            EGGS, "dynasor_cot", {"probe_every": 8, "stream_tokens": True}, on_event=events.append
        )
    details = result.account  # a method's details are part of its account
    probes = [e["answer"] for e in events if e["kind"] == "probe"]
    assert probes == details["probes"] and len(probes) >= 2
    chain = _streamed_texts(events)["chain"]
    if details["stopped_early"]:
        assert result.text.startswith(chain.rstrip())
    else:
        assert result.text == chain
    assert result.account["output_tokens"] > details["chain_tokens"]  # probes count


def test_stream_tokens_needs_stream(triton):
    with (
        ScaffoldingClient(triton.http_url, "http") as client,
        pytest.raises(ScaffoldingError, match="stream_tokens"),
    ):
        client.ask(QUESTION, "cot", {"stream_tokens": True})
