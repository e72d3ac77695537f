#!/usr/bin/env bash
# Everything on this machine, without Docker: Redis (started when none answers at REDIS_URL),
# the gateway on :8000 and one worker per installed worker type. The same as
#   uv run --extra sklearn aiq up [ARGS...]
# (README.md); Ctrl-C stops the workers (they drain), then the gateway, then that Redis.
# Arguments go to `aiq up`, e.g. ./scripts/run_local.sh --port 8080 --types sklearn,diagnostic
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec uv run --extra sklearn aiq up "$@"
