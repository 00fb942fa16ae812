#!/usr/bin/env bash
# Build the role images of deploy/Dockerfile and print their sizes and build times.
#
#   scripts/build_images.sh                  # worker generator api trainer
#   scripts/build_images.sh api worker       # just these targets
#   AIGQ_IMAGE_TARGETS="vllm" scripts/build_images.sh   # the GPU image (CUDA torch + vLLM)
#
# The builder is buildah (preferred: no daemon, works inside a container as root with
# vfs storage and chroot isolation), else podman, else docker. Knobs (environment):
#   AIGQ_IMAGE_BUILDER   buildah | podman | docker (default: the first one installed)
#   AIGQ_IMAGE_BASE      the base image (default python:3.11-slim); `local` builds one from
#                        Debian bookworm's python3 with mmdebstrap (no registry needed), and
#                        that also happens when the default cannot be pulled and mmdebstrap is
#                        installed
#   AIGQ_IMAGE_PREFIX    image names are <prefix>-<target> (default localhost/aigq)
#   AIGQ_IMAGE_TAG       (default dev)
#   AIGQ_PIP_OPTIONS     pip options for the builds; by default, where this machine has a local
#                        PyPI mirror (/opt/pypi, /opt/pypi-more, /opt/wheels), they point at it
#                        and it is mounted read-only into the build
#   AIGQ_PIP_CERT        a CA bundle pip trusts inside the build (default $PIP_CERT: a proxy
#                        that re-signs TLS needs it); mounted read-only
#   AIGQ_TORCH_INDEX_URL the trainer's torch index (default: PyTorch's CPU index, or empty
#                        when /opt/wheels holds a torch 2.13.0 CPU wheel)
#   STORAGE_DRIVER       buildah/podman storage (default vfs: works without overlay mounts)
set -euo pipefail
cd "$(dirname "$0")/.."

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  read -r -a targets <<<"${AIGQ_IMAGE_TARGETS:-worker generator api trainer}"
fi
prefix="${AIGQ_IMAGE_PREFIX:-localhost/aigq}"
tag="${AIGQ_IMAGE_TAG:-dev}"
base="${AIGQ_IMAGE_BASE:-python:3.11-slim}"
export STORAGE_DRIVER="${STORAGE_DRIVER:-vfs}"

log() { printf '[build_images] %s\n' "$*" >&2; }

builder="${AIGQ_IMAGE_BUILDER:-}"
if [ -z "$builder" ]; then
  for b in buildah podman docker; do
    command -v "$b" >/dev/null || continue
    # a docker client without a daemon that answers builds nothing
    if [ "$b" = docker ] && ! docker info >/dev/null 2>&1; then continue; fi
    builder=$b; break
  done
fi
[ -n "$builder" ] || { log "no image builder (buildah, podman or docker) installed"; exit 2; }

# The build command and its options for each builder.
case "$builder" in
  buildah) build=(buildah bud --isolation chroot --layers) ;;
  podman) build=(podman build --isolation chroot --layers) ;;
  docker) build=(docker build) ;;
  *) log "unknown builder $builder"; exit 2 ;;
esac

# A local PyPI mirror: mounted into the build and named in the pip options (docker build has
# no --volume, so with docker the mirror is not used).
volumes=()
pip_options="${AIGQ_PIP_OPTIONS-}"
torch_index="${AIGQ_TORCH_INDEX_URL-https://download.pytorch.org/whl/cpu}"
if [ -z "${AIGQ_PIP_OPTIONS+x}" ] && [ "$builder" != docker ]; then
  for d in /opt/pypi /opt/pypi-more; do
    if [ -d "$d/simple" ]; then
      volumes+=(--volume "$d:$d:ro")
      pip_options+=" --extra-index-url file://$d/simple"
    fi
  done
  if [ -d /opt/wheels ]; then
    volumes+=(--volume /opt/wheels:/opt/wheels:ro)
    pip_options+=" --find-links /opt/wheels"
    if [ -z "${AIGQ_TORCH_INDEX_URL+x}" ] && compgen -G '/opt/wheels/torch-2.13.0+cpu-*.whl' >/dev/null; then
      torch_index=""
    fi
  fi
fi

cert="${AIGQ_PIP_CERT:-${PIP_CERT:-}}"
if [ -n "$cert" ] && [ "$builder" != docker ]; then
  volumes+=(--volume "$cert:/opt/aigq-build-ca.crt:ro")
  pip_options+=" --cert /opt/aigq-build-ca.crt"
fi

# A base image without a registry: Debian bookworm (python3 is 3.11) from the Debian archive.
local_base() {
  local name=localhost/aigq-base:3.11-bookworm tar ctr
  if "$builder" images --quiet "$name" 2>/dev/null | grep -q .; then echo "$name"; return; fi
  command -v mmdebstrap >/dev/null || { log "no base image and no mmdebstrap"; exit 2; }
  [ "$builder" = buildah ] || { log "a local base needs buildah"; exit 2; }
  tar="$(mktemp -d)/base.tar"
  log "building $name with mmdebstrap (Debian bookworm, python3, python3-venv)"
  mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
    bookworm "$tar" >&2
  ctr=$(buildah from scratch)
  buildah add --quiet "$ctr" "$tar" / >/dev/null
  buildah config --env LANG=C.UTF-8 --cmd python3 "$ctr"
  buildah commit --quiet --rm "$ctr" "$name" >/dev/null
  rm -rf "$(dirname "$tar")"
  echo "$name"
}

if [ "$base" = local ]; then
  base=$(local_base)
elif ! "$builder" images --quiet "$base" 2>/dev/null | grep -q . \
    && ! "$builder" pull -q "$base" >/dev/null 2>&1; then
  log "cannot pull $base"
  [ -z "${AIGQ_IMAGE_BASE:-}" ] || exit 2
  base=$(local_base)
fi
log "builder $builder (storage $STORAGE_DRIVER), base $base, targets: ${targets[*]}"

results=()
for t in "${targets[@]}"; do
  name="$prefix-$t:$tag"
  start=$(date +%s)
  log "building $name"
  "${build[@]}" "${volumes[@]}" -f deploy/Dockerfile --target "$t" \
    --build-arg BASE_IMAGE="$base" --build-arg PIP_OPTIONS="$pip_options" \
    --build-arg TORCH_INDEX_URL="$torch_index" -t "$name" .
  results+=("$name $(($(date +%s) - start))s")
done

printf '\nbuild times (seconds of wall clock, cached layers reused):\n'
printf '  %s\n' "${results[@]}"
printf 'sizes:\n'
if [ "$builder" = buildah ]; then fmt='{{.Name}}:{{.Tag}} {{.Size}}'; else fmt='{{.Repository}}:{{.Tag}} {{.Size}}'; fi
"$builder" images --format "$fmt" | grep -F "$prefix-" || true
