#!/usr/bin/env bash
# Set up (if needed) and run every test: unit tests, then integration tests against a real tritonserver.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
