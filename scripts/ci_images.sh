#!/usr/bin/env bash
# CI: build the role images of deploy/Dockerfile when a builder works on this machine (issue 20).
# buildah and mmdebstrap come from Debian when no builder is installed and apt can install them
# (as root, or through sudo); without a builder the images are not built, and this says so. A
# build that fails fails CI. What is built, and why the vllm image is not: docs/deploy.md.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '[ci_images] %s\n' "$*" >&2; }

# docker counts only with a daemon that answers: a client binary alone builds nothing.
have_builder() { command -v buildah >/dev/null || command -v podman >/dev/null \
  || { command -v docker >/dev/null && docker info >/dev/null 2>&1; }; }

if { ! have_builder || ! command -v mmdebstrap >/dev/null; } && command -v apt-get >/dev/null; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO="none"; fi
  fi
  if [ "$SUDO" != none ]; then
    log "installing buildah and mmdebstrap (Debian)"
    $SUDO apt-get update -q >&2 || true
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends \
      buildah mmdebstrap >&2 || log "apt could not install them"
  fi
fi
if ! have_builder; then
  log "no image builder works here (buildah, podman or docker): images not built"
  exit 0
fi
started=$(date +%s)
bash scripts/build_images.sh
log "images built in $(($(date +%s) - started)) s"
