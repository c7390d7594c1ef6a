#!/usr/bin/env bash
# The main job in one command: set up, start a real Triton server on the CPU with the
# shipped models, answer one question with the chosen method, stop the server.
#   bash scripts/ask.sh "QUESTION" [--method majority_vote --samples 8 ...]   (scaffolding-client ask options)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ]; then
  echo "usage: bash scripts/ask.sh \"QUESTION\" [scaffolding-client ask options, e.g. --method majority_vote --samples 8]" >&2
  exit 2
fi
bash scripts/setup.sh
mkdir -p runs
# default ports (HTTP 8000, gRPC 8001, metrics 8002): the client's defaults too
.venv/bin/scaffolding-server --log-file runs/tritonserver.log > runs/scaffolding-server.out 2>&1 &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
echo "starting Triton (log: runs/tritonserver.log) ..."
until grep -q "^ready" runs/scaffolding-server.out 2>/dev/null; do
  if ! kill -0 $server 2>/dev/null; then cat runs/scaffolding-server.out >&2; exit 1; fi
  sleep 1
done
.venv/bin/scaffolding-client ask "$@"
