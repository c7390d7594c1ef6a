"""One method per module; this registry maps a request's ``method`` to its controller."""

from __future__ import annotations

from typing import Any

from ..kernel.controller import Controller
from ..kernel.params import Caps, InvalidParameter, build_params
from ..kernel.prompts import PromptFormat
from .adaptive_consistency import AdaptiveConsistency
from .beam_search import BeamSearch
from .best_of_n import BestOfN
from .cot import ChainOfThought
from .deepconf import DeepConf
from .dvts import DVTS
from .dynasor_cot import DynasorCoT
from .majority_vote import MajorityVote
from .mcts import MCTS
from .pal import PAL
from .pal_vote import PALVote
from .tree_of_thoughts import TreeOfThoughts
from .weighted_best_of_n import WeightedBestOfN

METHODS: dict[str, type[Controller]] = {
    controller.name: controller
    for controller in (
        ChainOfThought,
        MajorityVote,
        BestOfN,
        WeightedBestOfN,
        BeamSearch,
        DVTS,
        MCTS,
        TreeOfThoughts,
        AdaptiveConsistency,
        DeepConf,
        DynasorCoT,
        PAL,
        PALVote,
    )
}


def build_controller(
    method: str, params: dict[str, Any], prompt_format: PromptFormat, caps: Caps
) -> Controller:
    if method not in METHODS:
        raise InvalidParameter(
            "method", f"unknown method {method!r}; available: {', '.join(sorted(METHODS))}"
        )
    controller_class = METHODS[method]
    return controller_class(build_params(controller_class.Params, params, caps), prompt_format)
