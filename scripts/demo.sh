#!/usr/bin/env bash
# The main job, end to end: install everything, then run the whole nearline loop on this
# machine (`aigq demo`): the local broker and Redis, the embedded model (trained now, or the
# cached one), vLLM on the CPU (transformers if vLLM cannot start), the session worker, the
# generator and the read API; a slice of the AOL log replayed through it; what came out.
# Everything it starts is stopped at the end, on Ctrl-C too. Extra arguments go to `aigq demo`
# (see `.venv/bin/aigq demo --help`: --events, --rate, --backend, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
AIGQ_VLLM=${AIGQ_VLLM-cpu} bash scripts/bootstrap.sh
exec .venv/bin/aigq demo "$@"
