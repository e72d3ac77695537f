#!/bin/sh
# Fill the placeholders of deploy/nginx/aiq.conf from the environment:
#   NGINX_PORT=80 GATEWAY_UPSTREAM=gateway:8000 render.sh aiq.conf /etc/nginx/conf.d/aiq.conf
# (MAX_BODY_BYTES defaults to the gateway's 1048576). Only these names are substituted:
# nginx's own $variables stay as they are.
set -eu
if [ "$#" -ne 2 ]; then
  echo "usage: render.sh TEMPLATE OUTPUT" >&2
  exit 2
fi
: "${NGINX_PORT:?render.sh: set NGINX_PORT}"
: "${GATEWAY_UPSTREAM:?render.sh: set GATEWAY_UPSTREAM}"
MAX_BODY_BYTES="${MAX_BODY_BYTES:-1048576}"
case "$MAX_BODY_BYTES" in
  ''|*[!0-9]*) echo "render.sh: MAX_BODY_BYTES must be a number of bytes" >&2; exit 2 ;;
esac
export MAX_BODY_BYTES
# shellcheck disable=SC2016  # the list names the variables for envsubst; it must not expand
envsubst '${NGINX_PORT} ${GATEWAY_UPSTREAM} ${MAX_BODY_BYTES}' < "$1" > "$2"
