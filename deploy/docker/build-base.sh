#!/usr/bin/env bash
# Build a minimal Debian bookworm base image locally, without any image registry:
# debootstrap (minbase) into a temporary directory, then `docker import` it.
#
#   deploy/docker/build-base.sh [TAG]          # default TAG: aiq-base:bookworm
#   MIRROR=http://deb.debian.org/debian deploy/docker/build-base.sh
#
# Needs root (debootstrap), debootstrap (apt-get install -y debootstrap) and a reachable Debian
# mirror. The image is what `debian:bookworm-slim` would be for the Dockerfiles: pass it as
# --build-arg BASE_IMAGE=aiq-base:bookworm (scripts/docker-compose.sh and bench/docker_smoke.py
# do when it exists).
set -euo pipefail

tag="${1:-aiq-base:bookworm}"
mirror="${MIRROR:-http://deb.debian.org/debian}"
suite="${SUITE:-bookworm}"

if [ "$(id -u)" -ne 0 ]; then
  echo "build-base: debootstrap needs root" >&2
  exit 1
fi
command -v debootstrap >/dev/null || { echo "build-base: install debootstrap first (apt-get install -y debootstrap)" >&2; exit 1; }

root="$(mktemp -d /tmp/aiq-base.XXXXXX)"
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase "$suite" "$root" "$mirror"
# apt in the image uses the same mirror; no caches or logs in the layer.
echo "deb $mirror $suite main" > "$root/etc/apt/sources.list"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/var/log/*.log
tar -C "$root" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["/bin/bash"]' - "$tag"
echo "build-base: built $tag"
