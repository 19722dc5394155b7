#!/usr/bin/env bash
# Builds the local base image of the real-node tier: Debian bookworm minbase with Python 3.11, made with
# debootstrap from Debian's packages (no registry is reachable where the tests run), imported into
# podman as localhost/stratos-base:<key>. The image Dockerfiles take it as their PYTHON_IMAGE build
# argument in place of the public python:3.11 image; nothing else in them changes.
#
# Usage: base-image.sh   prints the image reference on stdout; builds it when podman lacks it.
# The rootfs is cached as a tarball under ${STRATOS_CACHE_DIR:-~/.cache/stratos}/images/, keyed by the
# suite and package list; the image tag hashes this whole script (the import settings too).
{
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SUITE=bookworm
MIRROR="${STRATOS_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PACKAGES=python3,python3-venv,python-is-python3,ca-certificates
rootfs_key="$(echo "$SUITE minbase $PACKAGES" | sha256sum | cut -c1-12)"
key="$(sha256sum "$here/base-image.sh" | cut -c1-12)"
ref="localhost/stratos-base:$key"
cache="${STRATOS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/stratos}/images"
log() { echo "base-image.sh: $*" >&2; }

if podman image exists "$ref"; then echo "$ref"; exit 0; fi
mkdir -p "$cache"
tarball="$cache/rootfs-$rootfs_key.tar"
exec 9>"$cache/rootfs-$rootfs_key.lock"
flock 9
if [[ ! -s "$tarball" ]]; then
  root="$(mktemp -d "$cache/.rootfs.XXXXXX")"
  trap 'rm -rf "$root"' EXIT
  log "debootstrap $SUITE minbase + $PACKAGES (a few minutes)"
  nice -n 10 debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$MIRROR" >"$cache/debootstrap.log" 2>&1 \
    || { tail -n 30 "$cache/debootstrap.log" >&2; exit 1; }
  # What a container image does not need: package caches and lists, docs, logs.
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* \
    "$root"/usr/share/man/* "$root"/var/log/*
  tar --numeric-owner -C "$root" -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
fi
podman import --change 'CMD ["python3"]' --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' "$tarball" "$ref" >/dev/null
echo "$ref"
exit
}
