"""Monte Carlo tree search over reasoning steps (UCB1 / UCT: Kocsis and
Szepesvári, 2006; for LLM reasoning, e.g. Hao et al., 2023, "Reasoning with
Language Model is Planning with World Model", and Zhang et al., 2024,
"ReST-MCTS*").

A node is a partial solution; its children are one-step continuations. Each
iteration

1. *selects* a leaf, descending from the root by UCB1:
   mean value + ``exploration`` * sqrt(ln(parent visits) / visits);
2. *expands* it with ``children_per_node`` continuations (one generation yield);
3. *evaluates* every new child: with ``value="prm"`` the PRM's aggregated score
   of the partial path, with ``value="rollout"`` the reward model's score of a
   sampled completion (rollouts are whole solutions, so they join the
   candidates);
4. *backpropagates* each child's value to the root.

A finished node, or one at ``max_depth``, is not expanded; selecting it again
re-counts its value. The answer is the best finished path by aggregated PRM
score; if none finished, the best partial path is completed greedily.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

from ..kernel.controller import Process
from ..kernel.params import InvalidParameter
from ..reasoning.scoring import RewardGuidedParams, best_index
from ..reasoning.stepwise import Path, StepwiseController, StepwiseSearch

VALUES = ("prm", "rollout")


@dataclass
class MCTSParams(RewardGuidedParams):
    iterations: int = (
        16  # expansions; each costs children_per_node generations and one reward request
    )
    children_per_node: int = 3
    max_depth: int = 8
    exploration: float = 1.4  # UCB1's c; 0 always follows the best mean value
    value: str = "prm"  # how a new node is valued: "prm" or "rollout"
    capped_by_samples = ("iterations", "children_per_node")
    capped_by_steps = ("max_depth",)

    def check(self) -> None:
        super().check()
        if self.value not in VALUES:
            raise InvalidParameter(
                "value", f"must be one of {', '.join(VALUES)}, got {self.value!r}"
            )


@dataclass(eq=False)
class Node:
    path: Path
    parent: Node | None = None
    depth: int = 0
    value: float = 0.0  # this node's own evaluation
    children: list[Node] = field(default_factory=list)
    visits: int = 0
    value_sum: float = 0.0

    def ucb1(self, exploration: float) -> float:
        assert self.parent is not None  # only children are ranked
        return self.value_sum / self.visits + exploration * math.sqrt(
            math.log(self.parent.visits) / self.visits
        )

    def backpropagate(self, value: float) -> None:
        node: Node | None = self
        while node is not None:
            node.visits += 1
            node.value_sum += value
            node = node.parent

    def descendants(self) -> list[Node]:
        return [node for child in self.children for node in (child, *child.descendants())]


class MCTS(StepwiseController[MCTSParams]):
    name = "mcts"
    Params = MCTSParams

    def process(self, question: str) -> Process:
        search = self.start(question)
        root = Node(Path())
        for iteration in range(1, self.params.iterations + 1):
            leaf = self.select(root)
            if leaf.path.finished or leaf.depth >= self.params.max_depth:
                # Nothing to expand: count the visit again so UCB1 turns to less-visited branches.
                leaf.backpropagate(leaf.value)
                yield from search.report(iteration, [], depth=leaf.depth, values=[])
                continue
            [paths] = yield from search.expand_and_score(
                [leaf.path], [self.params.children_per_node]
            )
            values = yield from self.evaluate(search, paths)
            leaf.children = [
                Node(path, leaf, leaf.depth + 1, value) for path, value in zip(paths, values)
            ]
            for child in leaf.children:
                child.backpropagate(child.value)
            search.retire_finished(paths)
            yield from search.report(iteration, paths, depth=leaf.depth + 1, values=values)
        partial = [node.path for node in root.descendants() if not node.path.finished]
        visits = [
            {"visits": child.visits, "value": child.value_sum / child.visits}
            for child in root.children
        ]
        return (yield from search.conclude(partial, root_children=visits))

    def select(self, root: Node) -> Node:
        node = root
        while node.children:
            node = node.children[
                best_index([child.ucb1(self.params.exploration) for child in node.children])
            ]
        return node

    def evaluate(
        self, search: StepwiseSearch, paths: list[Path]
    ) -> Generator[Any, Any, list[float]]:
        if self.params.value == "prm":
            return [path.judged() for path in paths]
        # A finished child is its own rollout; the others are completed by sampling and
        # scored in one batch.
        rollouts = iter(
            (
                yield from search.complete(
                    [p for p in paths if not p.finished], greedy=False, phase="rollout"
                )
            )
        )
        completed = [path if path.finished else next(rollouts) for path in paths]
        search.finished.extend(done for done, path in zip(completed, paths) if done is not path)
        return [done.judged() for done in completed]
