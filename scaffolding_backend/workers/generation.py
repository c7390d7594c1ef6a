"""The generation worker a scaffolding model's config asks for: which contract its
generator speaks, over which transport, and how tokens are counted when the engine
does not count them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..kernel.runtime import Worker
from ..service.config import ConfigError, ScaffoldingConfig, resolve_model_dir
from .context import RequestContext
from .contracts import TRITON_CONTRACTS
from .contracts.base import TokenCounter


class TokenizerCounter:
    """Counts tokens with a Hugging Face ``tokenizer.json`` (the ``tokenizers`` library,
    no torch)."""

    def __init__(self, directory: str):
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise ConfigError(
                "tokenizer_dir", "needs the 'tokenizers' package (pip install tokenizers)"
            ) from None
        path = Path(directory) / "tokenizer.json"
        if not path.is_file():
            raise ConfigError("tokenizer_dir", f"{str(path)!r} does not exist")
        self.tokenizer = Tokenizer.from_file(str(path))

    def count(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def round_trip(self, text: str) -> str:
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids
        return str(self.tokenizer.decode(ids, skip_special_tokens=True))


WorkerFactory = Callable[[RequestContext], Worker]


def generation_worker_factory(config: ScaffoldingConfig, model_repository: str) -> WorkerFactory:
    """A function of a request's context that returns its generation worker."""
    counter: TokenCounter | None = None
    if config.tokenizer_dir:
        directory = resolve_model_dir(config.tokenizer_dir, model_repository, key="tokenizer_dir")
        counter = TokenizerCounter(directory)
    if config.generator_contract == "openai":
        from .openai_http import OpenAIEndpoint, OpenAIGenerationWorker, OpenAISessions

        endpoint = OpenAIEndpoint(
            config.generator_url,
            config.generator_model,
            config.generator_api,
            config.generator_max_connections,
        )
        sessions = OpenAISessions(endpoint)
        return lambda context: OpenAIGenerationWorker(endpoint, sessions, context, counter)

    from .triton_bls import BLSGenerationWorker

    contract = TRITON_CONTRACTS[config.generator_contract](
        release=config.generator_release,
        decoupled=config.generator_decoupled,
        stream=config.generator_stream,
    )
    return lambda context: BLSGenerationWorker(
        config.generator_model, contract, context, counter, config.fold_generations
    )


def program_generation_worker_factory(
    config: ScaffoldingConfig, model_repository: str
) -> WorkerFactory:
    """The worker of the program-aided methods' generations: the model ``program_generator``
    names (a Triton model speaking the native contract), or the generation worker when it
    names none."""
    if not config.program_generator:
        return generation_worker_factory(config, model_repository)
    from .triton_bls import BLSGenerationWorker

    contract = TRITON_CONTRACTS["native"]()
    return lambda context: BLSGenerationWorker(
        config.program_generator, contract, context, None, config.fold_generations
    )
