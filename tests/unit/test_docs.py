"""The README's configuration tables and the deployment files say what the code does."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from scaffolding_backend.service.config import (
    GeneratorConfig,
    ModelConfig,
    RewardConfig,
    SandboxConfig,
    ScaffoldingConfig,
)

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def documented(config: type[ModelConfig]) -> dict[str, str]:
    """The README table that follows the class's name: parameter -> default as written."""
    start = README.index(f"(`{config.__name__}`")
    table = README[start : README.index("\n\n", README.index("| parameter |", start))]
    rows = re.findall(r"^\| `([a-z_]+)` \| ([^|]+) \|", table, re.M)
    return {key: cell.strip() for key, cell in rows}


def written(value: object) -> str:
    if value is dataclasses.MISSING:
        return "required"
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, tuple):
        return f"`{','.join(value)}`"
    if value == "":
        return '`""`'
    return f"`{str(value).encode('unicode_escape').decode()}`"


@pytest.mark.parametrize(
    "config", [ScaffoldingConfig, GeneratorConfig, RewardConfig, SandboxConfig]
)
def test_the_readme_lists_every_setting_with_its_default(config):
    table = documented(config)
    fields = {field.name: field.default for field in dataclasses.fields(config)}
    assert set(table) == set(fields)
    for name, default in fields.items():
        assert table[name].split(" (")[0] == written(default), name


def _environment(compose_file: str) -> dict[str, str]:
    service = yaml.safe_load((ROOT / compose_file).read_text())["services"]["triton"]
    # the defaults docker compose substitutes when the variables are unset
    return {
        key: re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)
        for key, value in service["environment"].items()
    }


@pytest.mark.parametrize("compose_file", ["docker-compose.yml", "docker-compose.vllm.yml"])
def test_the_compose_files_configure_models_that_load(compose_file):
    environment = _environment(compose_file)
    config = ScaffoldingConfig.load({}, environ=environment)
    assert config.generator_contract in ("trtllm", "vllm")
    assert RewardConfig.load({"model_dir": "models/prm"}, environ=environment).device == "cuda"
    image = yaml.safe_load((ROOT / compose_file).read_text())["services"]["triton"]["image"]
    assert re.search(r"25\.12-(trtllm|vllm)-python-py3", image)  # Python 3.12, a release we support
