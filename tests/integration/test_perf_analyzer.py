"""The load-test recipe works: perf_analyzer, through scripts/perf_analyzer.sh and the input files
in perf/, sends a few requests to every served model and sees only successful ones."""

import csv
import json
import subprocess
import time

import pytest

from scaffolding_backend.server import REPO_ROOT

pytestmark = pytest.mark.integration

SCRIPT = REPO_ROOT / "scripts" / "perf_analyzer.sh"
PERF = REPO_ROOT / "perf"
REQUESTS = 6
CONCURRENCY = 2

# (model, protocol, input file, extra options); the decoupled model needs gRPC streaming
CASES = [
    ("scaffolding", "grpc", "scaffolding_majority_vote_8.json", ["--streaming"]),
    ("scaffolding", "grpc", "scaffolding_majority_vote_8_stream.json", ["--streaming"]),
    ("scaffolding_unary", "http", "scaffolding_best_of_n_4.json", []),
    ("scaffolding_unary", "http", "scaffolding_beam_search_4.json", []),
    ("generator", "grpc", "generator.json", ["--streaming"]),
    ("program_generator", "grpc", "generator.json", ["--streaming"]),
    ("sandbox", "grpc", "sandbox.json", ["--streaming"]),
    ("reward", "http", "reward.json", []),
    ("reward_orm", "http", "reward.json", []),
]


@pytest.fixture(scope="session")
def perf_analyzer() -> list[str]:
    """The command that runs perf_analyzer; the first run of the script may download it."""
    command = ["bash", str(SCRIPT)]
    try:
        result = subprocess.run(
            [*command, "--version"], capture_output=True, text=True, timeout=600
        )
    except subprocess.TimeoutExpired:
        pytest.fail("scripts/perf_analyzer.sh --version did not finish within 600 s")
    if "Perf Analyzer Version" not in result.stdout + result.stderr:
        pytest.fail(
            f"scripts/perf_analyzer.sh could not provide a working perf_analyzer "
            f"(exit {result.returncode}):\n{result.stdout}{result.stderr}"
        )
    return command


def admin_header_options(triton, protocol: str) -> list[str]:
    """-H options carrying the server's admin key: perf_analyzer reads Triton's statistics, a
    restricted API. Over gRPC Triton expects the header's name prefixed; perf_analyzer sends
    -H headers as gRPC metadata too. (A server without an admin key has neither property.)"""
    headers = getattr(triton, "admin_grpc_headers" if protocol == "grpc" else "admin_headers", {})
    return [option for name, value in headers.items() for option in ("-H", f"{name}:{value}")]


@pytest.mark.parametrize(
    ("model", "protocol", "input_file", "extra"),
    CASES,
    ids=[f"{model}-{input_file.removesuffix('.json')}" for model, _, input_file, _ in CASES],
)
def test_perf_analyzer_loads_model(
    perf_analyzer, triton, request_outcomes, tmp_path, model, protocol, input_file, extra
):
    if model in triton.not_loaded:
        pytest.skip(f"{model} is not loaded here: {triton.not_loaded[model]}")
    report = tmp_path / "report.csv"
    command = [
        *perf_analyzer,
        "-m",
        model,
        "-i",
        protocol,
        "-u",
        triton.grpc_url if protocol == "grpc" else triton.http_url,
        "--input-data",
        str(PERF / input_file),
        "--concurrency-range",
        str(CONCURRENCY),
        "--request-count",
        str(REQUESTS),
        "-f",
        str(report),
        *admin_header_options(triton, protocol),
        *extra,
    ]
    before = request_outcomes(model)
    result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(command)}\nexit {result.returncode}:\n{output}"
    assert "error" not in output.lower(), output
    assert f"Request count: {REQUESTS}" in output, output
    # the server's own count, once settled: perf_analyzer reads it right after the last
    # response, and a decoupled request is counted only when its execute has returned
    # (perf_analyzer once printed "Successful request count: 5" for 6 answered requests)
    deadline = time.monotonic() + 10
    while (after := request_outcomes(model))[0] - before[0] < REQUESTS:
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert (after[0] - before[0], after[1] - before[1]) == (REQUESTS, 0), output

    with report.open() as lines:
        rows = list(csv.DictReader(lines))
    assert len(rows) == 1, rows
    row = rows[0]
    assert int(row["Concurrency"]) == CONCURRENCY
    assert float(row["Inferences/Second"]) > 0
    assert int(row["p50 latency"]) > 0
    if "stream" in input_file:
        # a progress event per finished sample before the final response
        assert float(row["Response Throughput"]) > float(row["Inferences/Second"]), row


@pytest.mark.parametrize("fold", [1, 8])
def test_the_bls_benchmark_measures_both_paths_over_the_echo_engine(perf_analyzer, tmp_path, fold):
    """``scaffolding-bench bls`` starts a server whose generator serves the echo engine and
    measures scaffolding's sub-requests against direct requests (one short pair), and,
    unfolded, the minimal hand-written BLS model's too; folded, both paths send the generator
    requests of 8 prompts."""
    from client.bls import main as bls_main

    report = tmp_path / "bls.json"
    arguments = ["--pairs", "1", "--window-ms", "1000", "--fold", str(fold)]
    assert bls_main([*arguments, "--json", str(report)]) == 0
    result = json.loads(report.read_text())
    [pair] = result["pairs"]
    through_bls, direct = pair["scaffolding"], pair["generator"]
    assert through_bls["generations_per_s"] == pytest.approx(8 * through_bls["requests_per_s"])
    assert direct["generations_per_s"] == pytest.approx(fold * direct["requests_per_s"])
    assert direct["requests_per_s"] > 0
    # what the generator was sent, from Triton's statistics
    assert through_bls["prompts_per_generator_request"] == fold
    assert direct["prompts_per_generator_request"] == fold
    assert result["ratios"] == [
        round(through_bls["generations_per_s"] / direct["generations_per_s"], 3)
    ]
    # CPU per generation, read from /proc for the server it started
    assert {"tritonserver", "scaffolding", "generator"} <= set(through_bls["cpu_ms_per_generation"])
    assert {"tritonserver", "generator"} <= set(direct["cpu_ms_per_generation"])
    if fold == 1:
        # and perf_analyzer's own, which the direct path pays per generation, the BLS path per 8
        client = [run["cpu_ms_per_generation"]["perf_analyzer"] for run in (through_bls, direct)]
        assert 0 < client[0] < client[1]
        # the minimal model: 8 generator requests of one prompt per request it answers
        minimal = pair["minimal_bls"]
        assert minimal["generations_per_s"] == pytest.approx(8 * minimal["requests_per_s"])
        assert minimal["prompts_per_generator_request"] == 1
        assert "minimal_bls" in minimal["cpu_ms_per_generation"]
        assert result["minimal_ratios"] == [
            round(minimal["generations_per_s"] / direct["generations_per_s"], 3)
        ]
    else:
        assert "minimal_bls" not in pair and "minimal_ratios" not in result
    for run in pair.values():
        assert 0 < run["machine_busy_percent"] <= 100


def test_a_failing_bls_measurement_says_what_the_server_logged(perf_analyzer, triton, tmp_path):
    """When perf_analyzer's requests fail, ``scaffolding-bench bls`` stops with perf_analyzer's
    last words and the server's own log lines, not a bare exit code."""
    from client.benchmark import Serving
    from client.bls import perf_analyzer as measure

    parameters = {"samples": 2, "max_tokens": 32, "reward_model": "reward_failing"}
    row = {
        "text_input": {"content": ["Tom has 13 apples and buys 8 more. How many now?"]},
        "method": {"content": ["best_of_n"]},
        "method_parameters": {"content": [json.dumps(parameters)]},
    }
    inputs = tmp_path / "failing.json"
    inputs.write_text(json.dumps({"data": [row]}))
    target = Serving(
        triton.grpc_url, triton.admin_grpc_headers, server_log=triton.logged_since_start
    )
    with pytest.raises(RuntimeError) as failure:
        measure(target, "scaffolding_faulty_reward", str(inputs), 2, 1000)
    message = str(failure.value)
    assert message.startswith("perf_analyzer failed on scaffolding_faulty_reward"), message
    assert "the server's log says:" in message, message
    assert "CUDA out of memory (fault fixture)" in message.split("the server's log says:")[1]
