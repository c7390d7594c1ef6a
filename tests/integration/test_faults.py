"""Faults in the models a scaffolding request depends on: the request that meets one fails
with a clear error, at once, and no other request notices (a killed stub: test_healing.py;
a slow generator past the deadline: test_engine_contracts.py; poison rows and cancels:
test_scaffolding_server.py)."""

import concurrent.futures
import re
import urllib.request

import pytest

from client.api import ScaffoldingClient, ScaffoldingError

QUESTION = "Tom has 13 apples and buys 8 more. How many apples does Tom have now?"
MODEL = "scaffolding_faulty_reward"


def _refused_by_fixture(triton) -> float:
    with urllib.request.urlopen(
        f"http://localhost:{triton.metrics_port}/metrics", timeout=5
    ) as reply:
        text = reply.read().decode()
    found = re.search(r'^fixture_failed_total\{model="reward_failing"\} ([0-9.e+]+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def test_a_failing_reward_model_fails_its_request_and_no_other(triton):
    before = _refused_by_fixture(triton)

    def ask(method: str, params: dict):
        with ScaffoldingClient(triton.http_url, "http", unary_model=MODEL) as client:
            return client.ask(QUESTION, method, params, seed=3)

    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        failing = pool.submit(
            ask, "best_of_n", {"samples": 4, "max_tokens": 96, "reward_model": "reward_failing"}
        )
        neighbours = [
            pool.submit(ask, "best_of_n", {"samples": 2, "max_tokens": 96}),
            *(
                pool.submit(ask, "majority_vote", {"samples": 4, "max_tokens": 96})
                for _ in range(3)
            ),
        ]
        with pytest.raises(ScaffoldingError) as failure:
            failing.result(timeout=120)
        answers = [future.result(timeout=120) for future in neighbours]
    message = str(failure.value)
    assert "reward_failing" in message and "CUDA out of memory (fault fixture)" in message
    assert "Traceback" not in message and "SubRequestFailed" not in message
    assert "spent so far" in message  # the account of what it cost comes with the error
    assert _refused_by_fixture(triton) > before
    assert [answer.account["status"] for answer in answers] == ["ok"] * 4
    # the operator sees it too: a warning in the server's log, without a traceback
    logged = [
        line
        for line in triton.logged_since_start().splitlines()
        if f"{MODEL}: request failed: worker:" in line
    ]
    assert logged and logged[-1].startswith("W"), logged
    assert "CUDA out of memory (fault fixture)" in logged[-1]
