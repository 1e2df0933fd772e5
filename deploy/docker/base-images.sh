#!/usr/bin/env bash
# Build the local base images that stand in for registry images on machines without a registry:
#   local/debian-python:bookworm  Debian minbase + python3, python3-venv, ca-certificates
#   local/debian-jre:bookworm     Debian minbase + a headless JRE 17 (for the local Kafka image)
# Each root filesystem comes from debootstrap and is turned into an image with `docker import`.
# The image tarballs are cached under ~/.cache/order-connector/images/, so a later run (or a
# fresh dockerd) only re-imports them. Idempotent: an image already known to dockerd is kept.
set -euo pipefail
# dockerd and debootstrap live in sbin, which a non-login PATH may lack.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

CACHE="${ORDER_CONNECTOR_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/order-connector}/images"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SUITE=bookworm
mkdir -p "$CACHE"

build_base() {
  local image="$1" include="$2" name="$3"
  if docker image inspect "$image" >/dev/null 2>&1; then
    echo "base-images: $image present" >&2
    return 0
  fi
  local tarball="$CACHE/$name.tar.gz"
  if [ ! -s "$tarball" ]; then
    echo "base-images: debootstrap $SUITE ($include) for $image" >&2
    local root
    root="$(mktemp -d /tmp/order-connector-rootfs.XXXXXX)"
    debootstrap --variant=minbase --include="$include" "$SUITE" "$root" "$MIRROR" >"$root.log" 2>&1 ||
      { tail -n 30 "$root.log" >&2; rm -rf "$root" "$root.log"; return 1; }
    # Smaller image: no apt lists, caches or docs are needed at run time.
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/usr/share/doc/* \
      "$root"/usr/share/man/* "$root"/usr/share/locale/*
    tar -C "$root" -c . | gzip -1 >"$tarball.partial"
    mv "$tarball.partial" "$tarball"
    rm -rf "$root" "$root.log"
  fi
  echo "base-images: importing $tarball as $image" >&2
  docker import --change 'CMD ["/bin/bash"]' "$tarball" "$image" >/dev/null
}

build_base local/debian-python:bookworm python3,python3-venv,ca-certificates debian-python-bookworm
build_base local/debian-jre:bookworm openjdk-17-jre-headless,ca-certificates debian-jre-bookworm
