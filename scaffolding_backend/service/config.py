"""Typed configuration of this project's Triton models: one dataclass per model kind,
every default written once, one way to override it.

A model's settings come from its ``config.pbtxt`` ``parameters`` (strings), then from
the JSON object in the environment variable its class names (``overrides_env``), so a
deployment (docker-compose, an NGC container) can retarget a model without editing
files. Unknown keys, values of the wrong type and values that would make every request
fail are refused when the model loads, with the key named. Upper-case keys belong to
the Python backend itself (``EXECUTION_ENV_PATH``, ...) and are left to it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from ..kernel.params import Caps
from ..kernel.prompts import DEFAULT_STEP_DELIMITER, DEFAULT_TEMPLATE, PromptFormat
from ..sandbox import Isolation, Sandbox
from ..sandbox import Limits as SandboxLimits


class ConfigError(ValueError):
    """A configuration value is refused; ``key`` names it."""

    def __init__(self, key: str, message: str):
        super().__init__(f"config parameter '{key}': {message}")
        self.key = key


C = TypeVar("C", bound="ModelConfig")

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _convert(key: str, raw: Any, annotation: Any) -> Any:
    """A config value from ``config.pbtxt`` (always a string) or from JSON (typed)."""
    optional = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    kind = (
        next(t for t in typing.get_args(annotation) if t is not type(None))
        if optional
        else annotation
    )
    if typing.get_origin(kind) is tuple:  # a list: "a,b" in config.pbtxt, ["a", "b"] in JSON
        items = raw.split(",") if isinstance(raw, str) else raw
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise ConfigError(key, f"expected a comma-separated list of names, got {raw!r}")
        return tuple(item.strip() for item in items if item.strip())
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
            return raw.strip().lower() in _TRUE
        raise ConfigError(key, f"expected true or false, got {raw!r}")
    if kind in (int, float):
        if isinstance(raw, bool):
            raise ConfigError(key, f"expected a number, got {raw!r}")
        try:
            value = kind(raw.strip()) if isinstance(raw, str) else kind(raw)
        except (TypeError, ValueError):
            raise ConfigError(
                key, f"expected {'an integer' if kind is int else 'a number'}, got {raw!r}"
            ) from None
        if kind is int and isinstance(raw, float) and raw != value:
            raise ConfigError(key, f"expected an integer, got {raw!r}")
        if kind is float and not math.isfinite(value):
            raise ConfigError(key, f"must be finite, got {raw!r}")
        return value
    if not isinstance(raw, str):
        raise ConfigError(key, f"expected a string, got {raw!r}")
    return raw


def _overrides(variable: str, environ: Mapping[str, str]) -> dict[str, Any]:
    raw = environ.get(variable, "")
    if not raw.strip():
        return {}
    try:
        overrides = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ConfigError(variable, f"the environment variable is not JSON: {error}") from None
    if not isinstance(overrides, dict):
        raise ConfigError(
            variable, "the environment variable must hold a JSON object of config parameters"
        )
    return overrides


@dataclass(frozen=True)
class ModelConfig:
    """Base of the per-model configs: loading, conversion and validation."""

    overrides_env: ClassVar[str] = ""

    @classmethod
    def load(
        cls: type[C], parameters: Mapping[str, str], environ: Mapping[str, str] | None = None
    ) -> C:
        values: dict[str, Any] = {
            key: value for key, value in parameters.items() if not key.isupper()
        }
        values.update(_overrides(cls.overrides_env, os.environ if environ is None else environ))
        fields = {field.name: field for field in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        for key in sorted(values):
            if key not in fields:
                raise ConfigError(key, f"unknown; {cls.__name__} takes {', '.join(sorted(fields))}")
        missing = [
            name
            for name, field in fields.items()
            if name not in values
            and field.default is dataclasses.MISSING
            and field.default_factory is dataclasses.MISSING
        ]
        if missing:
            raise ConfigError(missing[0], "is required")
        config = cls(**{key: _convert(key, value, hints[key]) for key, value in values.items()})
        config.validate()
        return config

    @classmethod
    def from_model_config(cls: type[C], model_config: Mapping[str, Any]) -> C:
        """From the model configuration Triton hands ``initialize``
        (``json.loads(args["model_config"])``)."""
        parameters = {
            key: value["string_value"] for key, value in model_config.get("parameters", {}).items()
        }
        return cls.load(parameters)

    def validate(self) -> None:
        """Refuse values that would make every request fail; raise ConfigError."""

    def _positive(self, *names: str) -> None:
        for name in names:
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be at least 1, got {getattr(self, name)}")

    def _one_of(self, name: str, allowed: typing.Iterable[str]) -> None:
        if getattr(self, name) not in allowed:
            raise ConfigError(
                name, f"must be one of {', '.join(sorted(allowed))}, got {getattr(self, name)!r}"
            )


@dataclass(frozen=True)
class ScaffoldingConfig(ModelConfig):
    """The ``scaffolding`` / ``scaffolding_unary`` models (the controllers' host)."""

    overrides_env: ClassVar[str] = "SCAFFOLDING_CONFIG_OVERRIDES"

    # where generation tasks go: a Triton model's name (or the model an OpenAI server serves),
    # the contract it speaks (native, trtllm, trtllm_bls, trtllm_llmapi, vllm, openai) and,
    # where that contract changed, its release ("" is the newest)
    generator_model: str = "generator"
    generator_contract: str = "native"
    generator_release: str = ""
    # TensorRT-LLM models are decoupled when deployed with decoupled_mode;
    # unset: the contract's default
    generator_decoupled: bool | None = None
    # ask a decoupled generator for token chunks as they are made (assembled by the worker)
    generator_stream: bool = False
    # the openai contract: the server's base URL (http://host:port/v1), which API, how many
    # connections at most
    generator_url: str = ""
    generator_api: str = "completions"
    generator_max_connections: int = 64
    # where the program-aided methods' generations go: a Triton model speaking the native
    # contract that writes programs; "": the generator above
    program_generator: str = "program_generator"
    # a tokenizer (tokenizer.json) to count tokens with when the engine returns no counts
    tokenizer_dir: str = ""
    reward_model: str = "reward"
    reward_models: tuple[str, ...] = ("reward", "reward_orm")
    default_method: str = "majority_vote"
    prompt_template: str = DEFAULT_TEMPLATE
    step_delimiter: str = DEFAULT_STEP_DELIMITER
    max_samples: int = 64
    max_tokens: int = 1024
    max_steps: int = 32
    max_tasks: int = 1024
    max_question_chars: int = 8192
    default_deadline_s: float = 300.0
    max_deadline_s: float = 1800.0
    bls_threads: int = 128
    # admission control, per model instance: requests beyond the first get UNAVAILABLE at once;
    # sub-requests beyond the second wait for a slot (each waiting BLS call holds a thread)
    max_concurrent_requests: int = 256
    max_inflight_subrequests: int | None = None  # unset: bls_threads
    # generations of one step that may go as the rows of one BLS request (a target whose
    # contract takes batches: native); 1 sends one request per generation
    fold_generations: int = 1
    # end this model's process when its event loop has not run for this long, so that it
    # heals: a Python backend deadlock can stop it for good (triton/watchdog.py); 0: never
    loop_stall_exit_s: float = 20.0

    def validate(self) -> None:
        from ..controllers import METHODS  # the registries decide which names exist
        from ..workers.contracts import CONTRACTS, TRITON_CONTRACTS

        self._one_of("generator_contract", CONTRACTS)
        contract = TRITON_CONTRACTS.get(self.generator_contract)
        if contract is not None and self.generator_release:
            self._one_of("generator_release", contract.releases)
        self._one_of("generator_api", ("completions", "chat"))
        self._positive("generator_max_connections")
        if self.generator_contract == "openai" and not self.generator_url.startswith(
            ("http://", "https://")
        ):
            raise ConfigError(
                "generator_url",
                f"the openai contract needs an http(s) URL, got {self.generator_url!r}",
            )
        self._positive(
            "max_samples",
            "max_tokens",
            "max_steps",
            "max_tasks",
            "max_question_chars",
            "bls_threads",
            "max_concurrent_requests",
            "fold_generations",
        )
        if self.loop_stall_exit_s < 0:
            raise ConfigError(
                "loop_stall_exit_s", f"must be 0 (off) or above, got {self.loop_stall_exit_s}"
            )
        if (
            self.max_inflight_subrequests is not None
            and not 1 <= self.max_inflight_subrequests <= self.bls_threads
        ):
            raise ConfigError(
                "max_inflight_subrequests",
                f"must be between 1 and bls_threads={self.bls_threads} (a waiting sub-request "
                f"holds a thread), got {self.max_inflight_subrequests}",
            )
        self._one_of("default_method", METHODS)
        if not 0 < self.default_deadline_s <= self.max_deadline_s:
            raise ConfigError(
                "default_deadline_s",
                f"must be in (0, max_deadline_s={self.max_deadline_s}], "
                f"got {self.default_deadline_s}",
            )
        if not self.generator_model:
            raise ConfigError("generator_model", "must name the model that generates")
        if "{question}" not in self.prompt_template:
            raise ConfigError("prompt_template", "must contain '{question}'")
        if not self.step_delimiter:
            raise ConfigError("step_delimiter", "must not be empty")

    @property
    def caps(self) -> Caps:
        return Caps(
            max_samples=self.max_samples, max_tokens=self.max_tokens, max_steps=self.max_steps
        )

    @property
    def sub_request_slots(self) -> int:
        return self.max_inflight_subrequests or self.bls_threads

    @property
    def prompt_format(self) -> PromptFormat:
        return PromptFormat(template=self.prompt_template, step_delimiter=self.step_delimiter)

    @property
    def allowed_reward_models(self) -> frozenset[str]:
        """Reward models a request may choose (``reward_model``); the default is always one."""
        return frozenset(self.reward_models) | {self.reward_model}


@dataclass(frozen=True)
class TorchModelConfig(ModelConfig):
    """What the CPU engines share: a model directory and torch's threads."""

    model_dir: str
    # torch threads; 1 by default: several model processes each spinning on every core
    # slowed generation about 30-fold on a 2-core machine. 0 means torch's default.
    num_threads: int = 1

    def validate(self) -> None:
        if self.num_threads < 0:
            raise ConfigError(
                "num_threads", f"must be 0 (torch's default) or more, got {self.num_threads}"
            )


@dataclass(frozen=True)
class GeneratorConfig(TorchModelConfig):
    """The CPU ``generator`` model (a Hugging Face causal LM)."""

    overrides_env: ClassVar[str] = "SCAFFOLDING_GENERATOR_OVERRIDES"

    max_tokens_cap: int = 1024
    # rows decoding together; more wait in the engine's queue and join as rows finish
    max_batch_rows: int = 64
    # "echo": no model, a fixed completion after a fixed delay (engines/echo.py), to measure
    # what Triton, BLS and this project's code cost on their own
    engine: str = "causal_lm"
    echo_delay_s: float = 0.0
    echo_completion: str = "Sam has 2 + 3 = 5 coins. The answer is \\boxed{5}."

    def validate(self) -> None:
        super().validate()
        self._positive("max_tokens_cap", "max_batch_rows")
        self._one_of("engine", ("causal_lm", "echo"))
        if not self.echo_delay_s >= 0:
            raise ConfigError("echo_delay_s", f"must be >= 0, got {self.echo_delay_s}")
        if not self.echo_completion.strip():
            raise ConfigError("echo_completion", "must not be empty")


@dataclass(frozen=True)
class ProgramGeneratorConfig(GeneratorConfig):
    """The ``program_generator`` model: a generator of its own, so that retargeting the text
    generator (``--generator-dir``, its overrides) leaves the programs' model alone."""

    overrides_env: ClassVar[str] = "SCAFFOLDING_PROGRAM_GENERATOR_OVERRIDES"


@dataclass(frozen=True)
class RewardConfig(TorchModelConfig):
    """The CPU ``reward`` / ``reward_orm`` models (a PRM or an ORM)."""

    overrides_env: ClassVar[str] = "SCAFFOLDING_REWARD_OVERRIDES"

    max_rows_per_request: int = 256
    device: str = "cpu"

    def validate(self) -> None:
        super().validate()
        self._positive("max_rows_per_request")
        if not (self.device == "cpu" or self.device == "cuda" or self.device.startswith("cuda:")):
            raise ConfigError("device", f"must be cpu, cuda or cuda:N, got {self.device!r}")


@dataclass(frozen=True)
class SandboxConfig(ModelConfig):
    """The ``sandbox`` model: isolated runs of untrusted Python (``sandbox.runner``)."""

    overrides_env: ClassVar[str] = "SCAFFOLDING_SANDBOX_OVERRIDES"

    # "namespaces" (refuses to load where they do not work) or "rlimits", the weaker mode
    # without network or file-system isolation, which must be asked for by name
    isolation: str = "namespaces"
    python: str = ""  # the interpreter programs run with; "": the server's Python installation
    concurrent_runs: int = 8  # per model instance; more requests wait for a run slot
    # a root server (no user namespace) runs slot k as uid uid_base + (pid % 4096) * slots + k
    uid_base: int = 61000
    max_code_bytes: int = 65536
    max_stdin_bytes: int = 65536
    wall_s: float = 5.0
    cpu_s: int = 2
    memory_bytes: int = 268435456
    max_processes: int = 16  # processes and threads, per run
    max_open_files: int = 64
    max_file_bytes: int = 1048576
    tmp_bytes: int = 8388608  # the tmpfs /tmp, a run's only writable place
    max_output_bytes: int = 65536  # stdout and stderr together; the run is killed past it

    def validate(self) -> None:
        self._one_of("isolation", ("namespaces", "rlimits"))
        self._positive(
            "concurrent_runs",
            "uid_base",
            "max_code_bytes",
            "cpu_s",
            "max_processes",
            "max_open_files",
            "max_file_bytes",
            "tmp_bytes",
            "max_output_bytes",
        )
        if self.max_stdin_bytes < 0:
            raise ConfigError("max_stdin_bytes", f"must be 0 or more, got {self.max_stdin_bytes}")
        if not 0 < self.wall_s <= 600:
            raise ConfigError("wall_s", f"must be in (0, 600], got {self.wall_s}")
        if self.memory_bytes < 64 << 20:
            raise ConfigError(
                "memory_bytes",
                f"must be at least 64 MiB (the interpreter), got {self.memory_bytes}",
            )
        if self.python and not os.access(self.python, os.X_OK):
            raise ConfigError("python", f"{self.python!r} is not an executable file")

    def sandbox(self) -> Sandbox:
        """The runner these settings describe."""
        limits = SandboxLimits(
            wall_s=self.wall_s,
            cpu_s=self.cpu_s,
            memory_bytes=self.memory_bytes,
            processes=self.max_processes,
            open_files=self.max_open_files,
            file_bytes=self.max_file_bytes,
            tmp_bytes=self.tmp_bytes,
            output_bytes=self.max_output_bytes,
        )
        return Sandbox(
            limits,
            isolation=Isolation(self.isolation),
            python=self.python,
            slots=self.concurrent_runs,
            uid_base=self.uid_base,
        )


def resolve_model_dir(path: str, model_repository: str, *, key: str = "model_dir") -> str:
    """A model directory named in config: absolute, or relative to the checkout that holds
    the model repository (``<checkout>/model_repository/<model>`` is ``model_repository``)."""
    resolved = Path(path) if os.path.isabs(path) else Path(model_repository).parent.parent / path
    if not resolved.is_dir():
        raise ConfigError(key, f"directory {str(resolved)!r} does not exist")
    return str(resolved.resolve())
