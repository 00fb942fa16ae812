#!/usr/bin/env bash
# The main job, end to end so far: install, start the local stack, replay the AOL log into it.
#   AIGQ_DEMO_SOURCE (aol|bestbuy|synthetic, default aol), AIGQ_DEMO_LIMIT (default: all),
#   AIGQ_DEMO_SPEED (max or N x log time, default max). Stop the stack: .venv/bin/aigq dev down
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh

aigq=.venv/bin/aigq
$aigq dev up
args=(--speed "${AIGQ_DEMO_SPEED:-max}")
[ -z "${AIGQ_DEMO_LIMIT:-}" ] || args+=(--limit "$AIGQ_DEMO_LIMIT")
$aigq replay "${AIGQ_DEMO_SOURCE:-aol}" "${args[@]}"
$aigq dev status
