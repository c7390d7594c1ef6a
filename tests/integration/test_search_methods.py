"""Every reward-guided method end-to-end: scaffolding -> BLS -> generator and reward models."""

import pytest

from client.api import ScaffoldingClient

pytestmark = pytest.mark.integration
QUESTION = (
    "Mia owns 57 eggs. She loses 44 eggs. She finds 94 more eggs. How many eggs does Mia have now?"
)

SMALL_BUDGETS = {
    "best_of_n": {"samples": 4, "aggregation": "min"},
    "weighted_best_of_n": {"samples": 4},
    "beam_search": {"samples": 4, "beam_width": 2, "max_steps": 6},
    "dvts": {"samples": 4, "beam_width": 2, "max_steps": 6},
    "mcts": {"iterations": 4, "children_per_node": 2, "max_depth": 6},
    "tree_of_thoughts": {"children_per_node": 2, "beam_width": 2, "max_depth": 6},
}
STEPWISE = {"beam_search", "dvts", "mcts", "tree_of_thoughts"}


@pytest.mark.parametrize("method", sorted(SMALL_BUDGETS))
def test_method_runs_through_triton_with_scores_in_the_account(triton, request_outcomes, method):
    events = []
    before = request_outcomes("reward")[0]
    with ScaffoldingClient(triton.grpc_url, "grpc") as client:
        result = client.ask(
            QUESTION,
            method,
            {**SMALL_BUDGETS[method], "max_tokens": 96},
            seed=3,
            on_event=events.append,
        )
    account = result.account
    assert account["status"] == "ok"
    by_model = account["sub_requests_by_model"]
    assert by_model["generation"] >= 2 and by_model["reward"] >= 1
    assert request_outcomes("reward")[0] - before == by_model["reward"]
    assert account["candidates"], "the finished solutions are listed"
    assert all(c["score"] is not None and 0.0 <= c["score"] <= 1.0 for c in account["candidates"])
    assert result.text in {c["text"] for c in account["candidates"]}
    kinds = {e["kind"] for e in events}
    assert "best" in kinds
    if method in STEPWISE:
        assert "step" in kinds
        assert account["steps"] and all(
            "score" in c for step in account["steps"] for c in step["candidates"]
        )
        # one batched reward request per search step (plus one for a final completion),
        # not one per candidate
        assert by_model["reward"] <= len(account["steps"]) + 1


def test_a_request_can_choose_the_orm(triton, request_outcomes):
    before = request_outcomes("reward_orm")[0]
    with ScaffoldingClient(triton.http_url, "http") as client:
        result = client.ask(
            QUESTION, "best_of_n", {"samples": 3, "max_tokens": 96, "reward_model": "reward_orm"}
        )
    assert request_outcomes("reward_orm")[0] - before == 1
    assert all(len(c["step_scores"]) == 1 for c in result.account["candidates"])
