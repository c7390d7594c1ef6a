"""Reward-guided methods (best-of-N, weighted best-of-N, beam search, DVTS, MCTS, tree
of thoughts) on a scripted generator and a scripted reward model, so every choice
they make can be checked by hand."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from scaffolding_backend.controllers import METHODS
from scaffolding_backend.kernel.params import Caps, InvalidParameter, build_params
from scaffolding_backend.kernel.prompts import PromptFormat
from scaffolding_backend.reasoning.scoring import aggregate
from scaffolding_backend.service.config import ScaffoldingConfig
from scaffolding_backend.workers.in_process import FunctionWorker

DEFAULT_CAPS = ScaffoldingConfig().caps

FORMAT = PromptFormat()
HEAD = FORMAT.prompt("q")

# The solution tree the scripted generator walks: the steps taken so far -> the
# next steps it offers, the i-th request for a prefix getting option i (cycling).
# A step with \boxed ends the solution; an unlisted prefix ends at once with 0.
TREE = {
    (): ["a", "b", "c", "d"],
    ("a",): ["a1", "a2"],
    ("b",): ["b1", "b2"],
    ("c",): ["c1", "c2"],
    ("a", "a1"): ["a1 end \\boxed{1}"],
    ("a", "a2"): ["a2 done \\boxed{5}", "a2x"],
    ("b", "b1"): ["b1 end \\boxed{8}"],
    ("b", "b2"): ["b2 done \\boxed{4}", "b2y"],
    ("c", "c1"): ["c1 done \\boxed{9}", "c1x"],
}
FALLBACK_STEP = "end \\boxed{0}"
# The scripted PRM's score of each step (0.5 when unlisted); a step's score is the same
# wherever it stands.
SCORES = {
    "a": 0.9,
    "b": 0.2,
    "c": 0.8,
    "d": 0.1,
    "a1": 0.3,
    "a2": 0.95,
    "b1": 0.4,
    "b2": 0.5,
    "c1": 0.85,
    "c2": 0.2,
    "a2 done \\boxed{5}": 0.9,
    "a2x": 0.1,
    "c1 done \\boxed{9}": 0.7,
    "c1x": 0.2,
    "b2 done \\boxed{4}": 0.6,
    "b2y": 0.15,
    "a1 end \\boxed{1}": 0.05,
    "b1 end \\boxed{8}": 0.99,
}


class ScriptedGenerator(FunctionWorker):
    """With a stop word: the next step of TREE. Without: a whole continuation, its first
    step chosen as above and the rest along each prefix's first option."""

    def __init__(self, tree=TREE):
        super().__init__(self.generate)
        self.tree = tree
        self.asked = Counter()

    def options(self, steps):
        return self.tree.get(steps, [FALLBACK_STEP])

    def generate(self, task):
        steps = tuple(FORMAT.split_steps(task.prompt[len(HEAD) :]))
        options = self.options(steps)
        new = [options[self.asked[steps] % len(options)]]
        self.asked[steps] += 1
        while not task.stop_words and "boxed" not in new[-1]:
            new.append(self.options(steps + tuple(new))[0])
        task.output_text = FORMAT.join_steps(new)
        task.finish_reason = "eos" if "boxed" in new[-1] else "stop_word"
        task.num_prompt_tokens = 5
        task.num_output_tokens = 3 * len(new)

    def tasks(self, phase):
        return [task for task in self.calls if task.phase == phase]


class ScriptedPRM(FunctionWorker):
    """Scores each step from a table; records how many tasks each batched request carried."""

    def __init__(self, scores=SCORES):
        super().__init__(self.judge, batched=True)
        self.scores = scores
        self.batches: list[int] = []

    def judge(self, task):
        task.step_scores = [self.scores.get(step, 0.5) for step in task.steps] or [0.5]
        task.score = task.step_scores[-1]

    async def run(self, tasks, on_done):
        self.batches.append(len(tasks))
        return await super().run(tasks, on_done)


def workers(generator=None, prm=None):
    generator = generator or ScriptedGenerator()
    prm = prm or ScriptedPRM()
    return {"generation": generator, "reward": prm}, generator, prm


def texts(record):
    return [candidate["text"] for candidate in record["candidates"]]


# -- scoring helpers --------------------------------------------------------------------


def test_aggregations_and_unknown_ones():
    scores = [0.5, 0.8, 0.2]
    assert aggregate(scores, "last") == 0.2
    assert aggregate(scores, "min") == 0.2
    assert aggregate(scores, "prod") == pytest.approx(0.08)
    assert aggregate(scores, "mean") == pytest.approx(0.5)
    with pytest.raises(ValueError):
        aggregate(scores, "median")


# -- best-of-N and weighted best-of-N ----------------------------------------------------

SOLUTIONS = [
    "x\n\nx: \\boxed{3}",
    "y\n\ny: \\boxed{3}",
    "z\n\nz: \\boxed{3}",
    "w\n\nw: \\boxed{7}",
]  # every step distinct


def sampled_world(step_scores):
    """N full solutions (sample i answers SOLUTIONS[i]); sample i's steps score step_scores[i]."""
    table = {}
    for solution, scores in zip(SOLUTIONS, step_scores):
        table.update(zip(FORMAT.split_steps(solution), scores))
    return workers(ScriptedGenerator({(): SOLUTIONS}), ScriptedPRM(table))


def test_best_of_n_picks_the_highest_score_even_for_a_minority_answer(run_method):
    tools, _generator, prm = sampled_world([[0.5, 0.3], [0.5, 0.3], [0.5, 0.3], [0.5, 0.9]])
    events = []
    account = run_method("best_of_n", {"samples": 4}, tools, events=events)
    assert account.outcome.answer.text == "7"
    assert [c.score for c in account.outcome.candidates] == [0.3, 0.3, 0.3, 0.9]
    assert account.outcome.candidates[3].step_scores == [0.5, 0.9]
    assert prm.batches == [4]  # all N scored in one reward request
    assert [e.kind for e in events] == ["sample"] * 4 + ["best"]
    assert account.to_json()["chosen"] == 3


def test_best_of_n_aggregation_changes_the_pick_and_ties_go_to_the_earliest(run_method):
    step_scores = [[0.9, 0.2], [0.1, 0.8], [0.1, 0.8], [0.3, 0.3]]
    assert (
        run_method("best_of_n", {"samples": 4}, sampled_world(step_scores)[0]).to_json()["chosen"]
        == 1
    )
    assert (
        run_method(
            "best_of_n", {"samples": 4, "aggregation": "min"}, sampled_world(step_scores)[0]
        ).to_json()["chosen"]
        == 3
    )
    assert (
        run_method(
            "best_of_n", {"samples": 4, "aggregation": "mean"}, sampled_world(step_scores)[0]
        ).to_json()["chosen"]
        == 0
    )


def test_weighted_best_of_n_sums_scores_per_answer(run_method):
    # three 0.35s for "3" (1.05) beat one 0.9 for "7" ...
    account = run_method(
        "weighted_best_of_n", {"samples": 4}, sampled_world([[1, 0.35]] * 3 + [[1, 0.9]])[0]
    )
    assert account.outcome.answer.text == "3"
    groups = {g["answer"]: g["weight"] for g in account.to_json()["tally"]["groups"]}
    assert groups == {"3": pytest.approx(1.05), "7": pytest.approx(0.9)}
    # ... but three 0.1s (0.3) do not, though "3" has the majority.
    account = run_method(
        "weighted_best_of_n", {"samples": 4}, sampled_world([[1, 0.1]] * 3 + [[1, 0.9]])[0]
    )
    assert account.outcome.answer.text == "7"


# -- beam search -------------------------------------------------------------------------


def test_beam_search_keeps_the_top_beam_width_and_follows_the_best_branch(run_method):
    tools, generator, prm = workers()
    events = []
    account = run_method("beam_search", {"samples": 4, "beam_width": 2}, tools, events=events)
    steps = account.outcome.details["steps"]
    # step 1: a .9 b .2 c .8 d .1 -> a, c; step 2: a1 .3 a2 .95 c1 .85 c2 .2 -> a2, c1;
    # step 3: both kept continuations finish -> the beam is empty.
    assert [s["kept"] for s in steps] == [[0, 2], [1, 2], [0, 2]]
    assert [len(s["candidates"]) for s in steps] == [4, 4, 4]
    assert prm.batches == [4, 4, 4]  # one batched reward request per step
    expanded = Counter(
        FORMAT.split_steps(t.prompt[len(HEAD) :])[-1] if t.prompt != HEAD else ""
        for t in generator.calls
    )
    assert expanded == {"": 4, "a": 2, "c": 2, "a2": 2, "c1": 2}  # b and d were pruned
    assert account.outcome.answer.text == "5"
    assert texts(account.to_json()) == [
        "a\n\na2\n\na2 done \\boxed{5}",
        "c\n\nc1\n\nc1 done \\boxed{9}",
    ]
    assert account.outcome.candidates[0].step_scores == [0.9, 0.95, 0.9]
    assert [e.data["step"] for e in events if e.kind == "step"] == [1, 2, 3]
    assert events[-1].kind == "best" and events[-1].data["answer"] == "5"


def test_beam_search_out_of_steps_completes_the_best_partial_path(run_method):
    tools, generator, prm = workers()
    account = run_method("beam_search", {"samples": 4, "beam_width": 2, "max_steps": 2}, tools)
    [completion] = generator.tasks("complete")
    assert completion.temperature == 0 and completion.stop_words == []
    assert completion.prompt == FORMAT.prompt("q", ["a", "a2"])  # a2 (.95) beat c1 (.85)
    assert prm.batches == [4, 4, 1]
    assert account.outcome.answer.text == "5"


def test_beam_search_respects_tight_server_caps(run_method):
    caps = Caps(max_samples=4, max_tokens=64, max_steps=2)
    tools, generator, _ = workers()
    run_method(
        "beam_search",
        {"samples": 4, "beam_width": 2, "max_steps": 2, "max_tokens": 64},
        tools,
        caps=caps,
    )
    assert all(task.max_tokens <= 64 for task in generator.calls)
    assert len(generator.tasks("expand")) <= 4 * 2
    with pytest.raises(InvalidParameter) as error:
        run_method("beam_search", {"samples": 5}, tools, caps=caps)
    assert error.value.field == "samples"


# -- DVTS -------------------------------------------------------------------------------


def test_dvts_searches_independent_subtrees_greedily(run_method):
    tools, _generator, prm = workers(prm=ScriptedPRM({**SCORES, "b": 0.85}))
    account = run_method("dvts", {"samples": 4, "beam_width": 2}, tools)
    record = account.to_json()
    assert record["subtrees"] == 2
    steps = record["steps"]
    # subtree 0 sees a .9 / b .85 and keeps a; subtree 1 sees c .8 / d .1 and keeps c,
    # although beam search would have kept a and b.
    assert [s["kept"] for s in steps] == [[0, 2], [1, 2], [0, 2]]
    assert [c["text"] for c in steps[0]["candidates"]] == ["a", "b", "c", "d"]
    assert prm.batches == [4, 4, 4]  # all subtrees scored in one request per step
    assert texts(record) == ["a\n\na2\n\na2 done \\boxed{5}", "c\n\nc1\n\nc1 done \\boxed{9}"]
    assert account.outcome.answer.text == "5"
    beam = run_method(
        "beam_search",
        {"samples": 4, "beam_width": 2, "max_steps": 1},
        workers(prm=ScriptedPRM({**SCORES, "b": 0.85}))[0],
    )
    assert beam.outcome.details["steps"][0]["kept"] == [0, 1]


# -- tree of thoughts ------------------------------------------------------------------


def test_tree_of_thoughts_keeps_beam_width_states_per_level(run_method):
    tools, _generator, prm = workers()
    account = run_method(
        "tree_of_thoughts", {"children_per_node": 2, "beam_width": 2, "max_depth": 5}, tools
    )
    steps = account.outcome.details["steps"]
    # level 1: a, b (both kept); level 2: a1 .3 a2 .95 b1 .4 b2 .5 -> a2, b2; level 3: both finish.
    assert [[c["text"].split("\n\n")[-1] for c in s["candidates"]] for s in steps][1] == [
        "a1",
        "a2",
        "b1",
        "b2",
    ]
    assert [s["kept"] for s in steps] == [[0, 1], [1, 3], [0, 2]]
    assert all(len(s["kept"]) <= 2 for s in steps)
    assert prm.batches == [2, 4, 4]
    assert account.outcome.answer.text == "5"
    assert [c.answer.text for c in account.outcome.candidates] == ["5", "4"]


# -- MCTS ------------------------------------------------------------------------------


def expanded_at(account, iteration):
    return [
        c["text"].split("\n\n")[-1]
        for c in account.outcome.details["steps"][iteration - 1]["candidates"]
    ]


def test_mcts_without_exploration_follows_the_best_value(run_method):
    tools, generator, prm = workers()
    params = {"iterations": 3, "children_per_node": 2, "max_depth": 3, "exploration": 0.0}
    account = run_method("mcts", params, tools)
    # 1: root -> a .9, b .2; 2: a is best -> a1, a2; 3: a (mean .72) then a2 .95 -> a2 done, a2x
    assert [expanded_at(account, i) for i in (1, 2, 3)] == [
        ["a", "b"],
        ["a1", "a2"],
        ["a2 done \\boxed{5}", "a2x"],
    ]
    assert prm.batches == [2, 2, 2]
    assert account.outcome.answer.text == "5"
    assert generator.tasks("complete") == []


def test_mcts_with_large_exploration_visits_the_neglected_branch(run_method):
    tools, generator, _prm = workers()
    params = {"iterations": 3, "children_per_node": 2, "max_depth": 3, "exploration": 10.0}
    account = run_method("mcts", params, tools)
    # at iteration 3, b's exploration bonus (1 visit) outweighs a's better mean (3 visits)
    assert expanded_at(account, 3) == ["b1", "b2"]
    # nothing finished within 3 iterations: the best partial path (a, a2: .95) is completed greedily
    [completion] = generator.tasks("complete")
    assert completion.prompt == FORMAT.prompt("q", ["a", "a2"])
    assert account.outcome.answer.text == "5"


def test_mcts_respects_iterations_and_max_depth(run_method):
    tools, generator, _prm = workers()
    account = run_method(
        "mcts", {"iterations": 4, "children_per_node": 2, "max_depth": 1, "exploration": 0.0}, tools
    )
    assert len(account.outcome.details["steps"]) == 4
    assert len(generator.tasks("expand")) == 2  # only the root could be expanded
    assert all(len(FORMAT.split_steps(t.prompt[len(HEAD) :])) <= 1 for t in generator.calls)
    assert account.outcome.details["root_children"][0]["visits"] == 4  # a re-counted twice


def test_mcts_rollout_values_come_from_completed_solutions(run_method):
    params = {"iterations": 2, "children_per_node": 2, "max_depth": 3, "exploration": 0.0}
    # The PRM prefers a (.9 over .2), but a's rollout ends at .05 and b's at .99.
    prm_account = run_method("mcts", {**params, "value": "prm"}, workers()[0])
    tools, generator, prm = workers()
    rollout_account = run_method("mcts", {**params, "value": "rollout"}, tools)
    assert expanded_at(prm_account, 2) == ["a1", "a2"]
    assert sorted(expanded_at(rollout_account, 2)) == ["b1", "b2"]
    rollouts = generator.tasks("rollout")
    assert len(rollouts) == 4 and all(t.temperature > 0 and not t.stop_words for t in rollouts)
    assert prm.batches == [2, 2, 2, 2]  # per iteration: the children, then their rollouts
    assert rollout_account.outcome.answer.text == "8"
    assert "b\n\nb1\n\nb1 end \\boxed{8}" in texts(rollout_account.to_json())


# -- every method --------------------------------------------------------------------------

BAD_PARAMS = [
    ("best_of_n", {"samples": 0}, "samples"),
    ("best_of_n", {"samples": 65}, "samples"),
    ("best_of_n", {"aggregation": "median"}, "aggregation"),
    ("best_of_n", {"max_tokens": 5000}, "max_tokens"),
    ("weighted_best_of_n", {"samples": 100}, "samples"),
    ("beam_search", {"samples": 4, "beam_width": 8}, "beam_width"),
    ("beam_search", {"max_steps": 33}, "max_steps"),
    ("beam_search", {"beam_width": "2"}, "beam_width"),
    ("dvts", {"samples": 6, "beam_width": 4}, "beam_width"),
    ("dvts", {"beam_width": 0}, "beam_width"),
    ("mcts", {"value": "oracle"}, "value"),
    ("mcts", {"iterations": 65}, "iterations"),
    ("mcts", {"max_depth": 0}, "max_depth"),
    ("mcts", {"exploration": -1.0}, "exploration"),
    ("tree_of_thoughts", {"children_per_node": 65}, "children_per_node"),
    ("tree_of_thoughts", {"max_depth": 40}, "max_depth"),
    ("tree_of_thoughts", {"aggregation": "sum"}, "aggregation"),
]


@pytest.mark.parametrize("method, params, field", BAD_PARAMS)
def test_bad_params_are_refused_naming_the_field(method, params, field):
    with pytest.raises(InvalidParameter) as error:
        build_params(METHODS[method].Params, params, DEFAULT_CAPS)
    assert error.value.field == field


SEARCH_RUNS = [
    ("best_of_n", {"samples": 4}),
    ("weighted_best_of_n", {"samples": 4}),
    ("beam_search", {"samples": 4, "beam_width": 2}),
    ("dvts", {"samples": 4, "beam_width": 2}),
    ("mcts", {"iterations": 3, "children_per_node": 2}),
    ("tree_of_thoughts", {"children_per_node": 2, "beam_width": 2}),
]


@pytest.mark.parametrize("method, params", SEARCH_RUNS)
def test_the_account_is_json_carries_the_details_and_stays_within_caps(run_method, method, params):
    caps = Caps(max_samples=4, max_tokens=64, max_steps=3)
    tools, generator, prm = workers()
    account = run_method(method, {**params, "max_tokens": 64}, tools, caps=caps)
    record = json.loads(json.dumps(account.to_json()))
    assert record["status"] == "ok" and record["method"] == method
    assert record["answer"] is not None
    assert record["candidates"] and all(
        "score" in c and "step_scores" in c for c in record["candidates"]
    )
    assert record["sub_requests_by_model"]["reward"] == len(prm.batches)
    assert record["tasks"] == len(generator.calls) + sum(prm.batches)
    assert all(task.max_tokens == 64 for task in generator.calls)
    assert max(prm.batches) <= 4  # no step scores more than the sample cap allows
    if not method.endswith("best_of_n"):
        assert 1 <= len(record["steps"]) <= 3
        assert all(
            len(FORMAT.split_steps(task.prompt[len(HEAD) :])) < 3 for task in generator.calls
        )
