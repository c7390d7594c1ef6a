import asyncio

import pytest

from scaffolding_backend.controllers import build_controller
from scaffolding_backend.kernel.prompts import PromptFormat
from scaffolding_backend.kernel.runtime import Limits, Runtime
from scaffolding_backend.service.config import ScaffoldingConfig

DEFAULT_CAPS = ScaffoldingConfig().caps


@pytest.fixture
def run_method():
    """Run a method on a question through the real runtime with the given workers."""

    def run(
        method,
        params,
        workers,
        *,
        question="q",
        seed=0,
        limits=Limits(),
        events=None,
        caps=DEFAULT_CAPS,
    ):
        controller = build_controller(method, params, PromptFormat(), caps)
        return asyncio.run(
            Runtime(workers).run(
                controller.process(question),
                method=method,
                seed=seed,
                limits=limits,
                on_progress=None if events is None else events.append,
            )
        )

    return run
