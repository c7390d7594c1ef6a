"""scaffolding-eval against the session's server: table, JSON and plot, and the model
card's numbers."""

import json

import pytest

from client import evaluate
from scaffolding_backend.server import REPO_ROOT, free_port

pytestmark = pytest.mark.integration
# written by: scaffolding-eval --preset model-card --limit 200 --out runs/model-card
# (results.json copied here)
MODEL_CARD_RESULTS = REPO_ROOT / "models" / "model_card_eval.json"
SUBSET = 24
# Sampling is seeded per question and decoding is batch-invariant up to float noise, so
# a rerun on the same questions should agree closely; the tolerance absorbs the rare
# sample that flips when a different batch changes the last bits of a logit.
TOLERANCE = 0.15


def test_eval_writes_table_json_and_plot(triton, tmp_path, capsys):
    code = evaluate.main(
        [
            "--url",
            triton.grpc_url,
            "--limit",
            "3",
            "--methods",
            "majority_vote",
            "best_of_n:aggregation=min",
            "--budgets",
            "1",
            "2",
            "--max-tokens",
            "96",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    result = json.loads((tmp_path / "results.json").read_text())
    assert [run["label"] for run in result["runs"]] == [
        "majority_vote@1",
        "majority_vote@2",
        "best_of_n:aggregation=min@1",
        "best_of_n:aggregation=min@2",
    ]
    for run in result["runs"]:
        assert run["questions"] == 3 and run["errors"] == 0
        assert 0 <= run["ci95"][0] <= run["accuracy"] <= run["ci95"][1] <= 1
        assert run["mean_sub_requests"] >= run["budget"]
    assert (tmp_path / "accuracy_vs_tokens.png").stat().st_size > 10_000
    assert "majority_vote@2" in capsys.readouterr().out


def test_model_card_numbers_reproduce_on_a_subset(triton, tmp_path):
    recorded = {run["label"]: run for run in json.loads(MODEL_CARD_RESULTS.read_text())["runs"]}
    assert (
        evaluate.main(
            [
                "--url",
                triton.grpc_url,
                "--preset",
                "model-card",
                "--limit",
                str(SUBSET),
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    rerun = {
        run["label"]: run for run in json.loads((tmp_path / "results.json").read_text())["runs"]
    }
    assert set(rerun) == set(recorded)
    for label, run in rerun.items():
        expected = sum(recorded[label]["correct"][:SUBSET]) / SUBSET
        assert abs(run["accuracy"] - expected) <= TOLERANCE, (label, run["accuracy"], expected)


def test_eval_refuses_a_url_where_no_server_is_ready():
    url = f"127.0.0.1:{free_port()}"
    with pytest.raises(SystemExit, match=f"no ready Triton server answers grpc at {url}"):
        evaluate.main(["--url", url, "--limit", "2", "--methods", "cot", "--budgets", "1"])


def test_eval_stops_when_the_server_stops_answering_instead_of_scoring_its_absence():
    url = f"127.0.0.1:{free_port()}"
    runs = evaluate.plan_runs(["cot"], [1])
    rows = [{"question": "Tom has 3 pens. He buys 2 more. How many pens now?", "answer": "5"}] * 6
    with pytest.raises(evaluate.ServerGone, match=r"stopped answering after \d of 6 requests"):
        evaluate.evaluate(url, "grpc", runs, rows, concurrency=2, seed=0, max_tokens=None)
