#!/usr/bin/env bash
# The whole test suite: install, lint, type-check, then pytest (unit + integration).
# Integration tests start their own throwaway tansu broker and use (or start) Redis.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
# The generator tests run a real vLLM server on the CPU: install it unless told otherwise.
AIGQ_VLLM=${AIGQ_VLLM-cpu} bash scripts/bootstrap.sh

echo "== ruff"; .venv/bin/ruff check . && .venv/bin/ruff format --check .
echo "== mypy"; .venv/bin/mypy
echo "== pytest"
rc=0
.venv/bin/pytest "$@" || rc=$?
if [ "$rc" = 5 ]; then echo "pytest collected no tests: that is a failure" >&2; fi
exit "$rc"
