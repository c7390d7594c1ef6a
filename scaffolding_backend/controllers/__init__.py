"""One method per module; this registry maps a request's ``method`` to its controller."""

from __future__ import annotations

from typing import Any

from ..core.controller import Controller
from ..core.params import Caps, InvalidParameter, build_params
from ..core.prompts import PromptFormat
from .cot import ChainOfThought
from .majority_vote import MajorityVote

METHODS: dict[str, type[Controller]] = {
    controller.name: controller
    for controller in (ChainOfThought, MajorityVote)
}


def build_controller(method: str, params: dict[str, Any], prompt_format: PromptFormat, caps: Caps) -> Controller:
    if method not in METHODS:
        raise InvalidParameter("method", f"unknown method {method!r}; available: {', '.join(sorted(METHODS))}")
    controller_class = METHODS[method]
    return controller_class(build_params(controller_class.Params, params, caps), prompt_format)
