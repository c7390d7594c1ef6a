"""scaffolding-bench load against the session's server: a tiny closed sweep and a tiny
open-loop rate, both sides at every level, and the JSON and the plot it writes."""

import json

import pytest

from client import benchmark

pytestmark = pytest.mark.integration

SAMPLES = 2
CONCURRENCY = (1, 2)
# seed 1 schedules 5 arrivals in 2 s at 4/s (the schedule is seeded, so always 5)
RATE = 4
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_load_sweep_measures_both_sides_at_every_level(triton, tmp_path, capsys):
    report, picture = tmp_path / "load.json", tmp_path / "load.png"
    code = benchmark.main(
        [
            "load",
            "--grpc-url",
            triton.grpc_url,
            "--concurrency",
            ",".join(map(str, CONCURRENCY)),
            "--rate",
            str(RATE),
            "--duration",
            "2",
            "--warmup",
            "0.5",
            "--samples",
            str(SAMPLES),
            "--max-tokens",
            "32",
            "--json",
            str(report),
            "--plot",
            str(picture),
        ]
    )
    assert code == 0
    result = json.loads(report.read_text())
    assert result["settings"]["samples"] == SAMPLES and result["stopped"] is None
    assert [(level["strategy"], level["load"]) for level in result["levels"]] == [
        ("closed", 1),
        ("closed", 2),
        ("open", RATE),
    ]
    for level in result["levels"]:
        assert set(level["sides"]) == {"server", "client"}
        for side, numbers in level["sides"].items():
            where = (level["strategy"], level["load"], side)
            assert numbers["completed"] > 0 and numbers["errors"] == 0, where
            latency = numbers["latency_s"]
            assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"], where
            assert len(numbers["latencies_s"]) == numbers["completed"], where
            # every vote sent exactly --samples generations (the server's own account says so)
            assert numbers["generations_match_samples"], where
            assert numbers["generations_per_s"] == pytest.approx(
                SAMPLES * numbers["requests_per_s"], abs=1e-3
            ), where
            assert numbers["output_tokens_per_s"] > 0, where
            assert numbers["goodput_per_s"] <= numbers["requests_per_s"], where
        assert level["agreement"]["compared"] > 0, level["agreement"]
    open_level = result["levels"][-1]["sides"]
    assert all(side["offered"] == side["completed"] for side in open_level.values())
    assert picture.read_bytes().startswith(PNG_SIGNATURE)
    printed = capsys.readouterr().out
    assert "closed loop" in printed and "open loop" in printed
