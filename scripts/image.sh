#!/usr/bin/env bash
# The operator image without a Docker engine or a registry: Debian's buildah builds the Dockerfile in a
# storage of its own (vfs driver, chroot isolation), on a base made here from a debootstrap root file system.
#
#   bash scripts/image.sh build            # installs buildah and debootstrap, makes the base, builds the image
#   bash scripts/image.sh buildah ARGS...  # buildah on the same storage, e.g. `images`, `from`, `run`, `rm`
#
# Everything cached lives outside the repository, under $AIROLLOUT_CACHE (~/.cache/airollout)/image: the base's
# root file system as a tarball and buildah's storage with every layer (`--layers`), the dependencies' among
# them. (pip's own HTTP cache is no help here: the proxy's answers carry no caching headers.)
# The Dockerfile's pinned default base needs a registry; `--build-arg PYTHON_IMAGE=...` replaces it here.
# Pip may sit behind a TLS-intercepting proxy: its CA bundle ($AIROLLOUT_PIP_CA, default the system bundle)
# reaches the build as a secret, mounted for the one RUN that needs it and never written into a layer.
#
# Prints the figures of the run: how long the base and the image took, and the image's size.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${AIROLLOUT_CACHE:-$HOME/.cache/airollout}"
IMAGE_CACHE="$CACHE/image"
IMAGE="${AIROLLOUT_IMAGE:-localhost/airollout:dev}"
BASE_IMAGE=localhost/airollout-base:bookworm-python3
# Debian bookworm's python3 (3.11) with pip for the builder stage; nothing else beyond debootstrap's minbase.
BASE_PACKAGES=python3,python3-pip
MIRROR="${AIROLLOUT_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PIP_CA="${AIROLLOUT_PIP_CA:-/etc/ssl/certs/ca-certificates.crt}"
BASE_TARBALL="$IMAGE_CACHE/rootfs-bookworm-$(printf '%s %s' "$BASE_PACKAGES" "$MIRROR" | sha256sum | cut -c1-12).tar"

log() { printf '[image] %s\n' "$*" >&2; }

buildah_() {
  # buildah's scratch space follows TMPDIR: keep it beside the storage.
  TMPDIR="$IMAGE_CACHE/tmp" buildah --root "$IMAGE_CACHE/storage" --runroot "$IMAGE_CACHE/run" \
    --storage-driver vfs "$@"
}

install_tools() {
  command -v buildah >/dev/null 2>&1 && command -v debootstrap >/dev/null 2>&1 && return 0
  log "installing buildah and debootstrap (Debian packages)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends buildah debootstrap >/dev/null
}

make_rootfs() {
  [ -f "$BASE_TARBALL" ] && return 0
  log "debootstrap: Debian bookworm minbase + $BASE_PACKAGES"
  local root="$IMAGE_CACHE/rootfs.tmp"
  rm -rf "$root" && mkdir -p "$root"
  debootstrap --variant=minbase --include="$BASE_PACKAGES" bookworm "$root" "$MIRROR" >"$IMAGE_CACHE/debootstrap.log"
  # What only a package manager run needs: its lists and downloads, docs, manuals and translations.
  rm -rf "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* "$root"/usr/share/man/* \
    "$root"/usr/share/locale/* "$root"/var/log/*
  tar -C "$root" --numeric-owner -cf "$BASE_TARBALL.tmp" .
  mv "$BASE_TARBALL.tmp" "$BASE_TARBALL"
  rm -rf "$root"
}

import_base() {
  local stamp
  stamp="$(basename "$BASE_TARBALL")"
  if [ "$(buildah_ inspect --type image --format '{{index .ImageAnnotations "dev.airollout.rootfs"}}' \
          "$BASE_IMAGE" 2>/dev/null)" = "$stamp" ]; then
    return 0
  fi
  log "importing the root file system as $BASE_IMAGE"
  local container
  container=$(buildah_ from scratch)
  buildah_ add "$container" "$BASE_TARBALL" / >/dev/null
  buildah_ config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --annotation "dev.airollout.rootfs=$stamp" --cmd python3 "$container"
  buildah_ commit --rm "$container" "$BASE_IMAGE" >/dev/null
}

build() {
  mkdir -p "$IMAGE_CACHE/tmp"
  local started base_done built size
  started=$(date +%s)
  install_tools
  make_rootfs
  import_base
  base_done=$(date +%s)
  log "building $IMAGE from the Dockerfile on $BASE_IMAGE"
  buildah_ bud --layers --isolation chroot --build-arg "PYTHON_IMAGE=$BASE_IMAGE" \
    --secret "id=ca,src=$PIP_CA" -t "$IMAGE" -f Dockerfile . >"$IMAGE_CACHE/build.log" 2>&1 \
    || { tail -n 40 "$IMAGE_CACHE/build.log" >&2; exit 1; }
  built=$(date +%s)
  size=$(buildah_ inspect --type image --format '{{.FromImageDigest}}' "$IMAGE" >/dev/null \
    && buildah_ images --format '{{.Size}}' "$IMAGE" | head -n1)
  # Each build's intermediate layers are the next build's cache, but vfs stores every layer as a full copy:
  # once the storage passes $AIROLLOUT_IMAGE_CACHE_GB, untagged layers go (the next build redoes the builder).
  if [ "$(du -s --block-size=1G "$IMAGE_CACHE/storage" | cut -f1)" -gt "${AIROLLOUT_IMAGE_CACHE_GB:-12}" ]; then
    buildah_ rmi --prune >/dev/null 2>&1 || true
  fi
  printf 'image %s: base ready in %ss, image built in %ss, size %s\n' \
    "$IMAGE" $((base_done - started)) $((built - base_done)) "$size"
}

case "${1:-}" in
  build) build ;;
  # exec: a signal sent to this script reaches buildah, which passes it on to what it runs.
  buildah) shift; mkdir -p "$IMAGE_CACHE/tmp"; TMPDIR="$IMAGE_CACHE/tmp" exec buildah --root "$IMAGE_CACHE/storage" \
    --runroot "$IMAGE_CACHE/run" --storage-driver vfs "$@" ;;
  *) echo "usage: $0 build | buildah ARGS..." >&2; exit 2 ;;
esac
