#!/usr/bin/env bash
# Set up (if needed), lint and type-check, then run every test: unit tests, then integration
# tests against a real tritonserver.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
