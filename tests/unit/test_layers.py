"""The layers stay apart (docs/ARCHITECTURE.md): checked on the import statements."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "scaffolding_backend"


def imports(path: Path) -> set[str]:
    """Absolute module names a file imports (relative imports resolved)."""
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                found.add(".".join([*base, node.module] if node.module else base))
            else:
                found.add(node.module or "")
    return found


def files(layer: str) -> list[Path]:
    return sorted((PACKAGE / layer).rglob("*.py"))


def offending(layer: str, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    bad = {}
    for path in files(layer):
        hits = sorted(name for name in imports(path) if name.startswith(forbidden))
        if hits:
            bad[str(path.relative_to(ROOT))] = hits
    return bad


TRITON = ("triton_python_backend_utils", "scaffolding_backend.triton")
TORCH = ("torch", "transformers", "scaffolding_backend.engines", "scaffolding_training")
RULES = {
    # the kernel: the standard library only
    "kernel": (
        "numpy",
        "math_verify",
        "scaffolding_backend.reasoning",
        "scaffolding_backend.controllers",
        "scaffolding_backend.workers",
        "scaffolding_backend.service",
        *TRITON,
        *TORCH,
    ),
    "reasoning": (
        "scaffolding_backend.controllers",
        "scaffolding_backend.workers",
        *TRITON,
        *TORCH,
    ),
    "controllers": ("scaffolding_backend.workers", "scaffolding_backend.service", *TRITON, *TORCH),
    "workers": (
        "scaffolding_backend.controllers",
        "scaffolding_backend.reasoning",
        "scaffolding_backend.triton",
        *TORCH,
    ),
    "service": (*TRITON, *TORCH),
    # the sandbox runner: the standard library only
    "sandbox": (
        "numpy",
        "math_verify",
        "scaffolding_backend.kernel",
        "scaffolding_backend.reasoning",
        "scaffolding_backend.controllers",
        "scaffolding_backend.workers",
        "scaffolding_backend.service",
        *TRITON,
        *TORCH,
    ),
    "triton": ("scaffolding_training",),
}


@pytest.mark.parametrize("layer", list(RULES))
def test_a_layer_imports_only_what_it_may(layer):
    assert offending(layer, RULES[layer]) == {}


def test_the_contract_adapters_know_no_transport():
    assert offending("workers/contracts", ("triton_python_backend_utils", "aiohttp")) == {}


def test_model_files_only_import():
    for model in sorted((ROOT / "model_repository").glob("*/1/model.py")):
        tree = ast.parse(model.read_text())
        assert all(isinstance(node, ast.ImportFrom) for node in tree.body), model


def test_the_triton_side_imports_without_torch():
    """What a TensorRT-LLM container loads (controllers, workers, config, parser) needs
    neither torch nor transformers."""
    import subprocess
    import sys

    code = (
        "import sys, scaffolding_backend.controllers, scaffolding_backend.service.job, "
        "scaffolding_backend.workers.generation, scaffolding_backend.workers.openai_http; "
        "heavy = sorted(m for m in ('torch', 'transformers') if m in sys.modules); "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_client_uses_public_package_interfaces_only():
    public = {
        "scaffolding_backend.kernel",
        "scaffolding_backend.reasoning",
        "scaffolding_backend.controllers",  # the method registry
        "scaffolding_backend.server",  # the launcher
    }
    for path in sorted((ROOT / "client").glob("*.py")):
        used = {name for name in imports(path) if name.startswith("scaffolding_backend")}
        assert used <= public, (path.name, used - public)
