#!/bin/sh
# Fill the placeholders of deploy/nginx/aiq.conf from the environment:
#   NGINX_PORT=80 GATEWAY_UPSTREAM=gateway:8000 render.sh aiq.conf /etc/nginx/conf.d/aiq.conf
# Only these two names are substituted: nginx's own $variables stay as they are.
set -eu
if [ "$#" -ne 2 ]; then
  echo "usage: render.sh TEMPLATE OUTPUT" >&2
  exit 2
fi
: "${NGINX_PORT:?render.sh: set NGINX_PORT}"
: "${GATEWAY_UPSTREAM:?render.sh: set GATEWAY_UPSTREAM}"
# shellcheck disable=SC2016  # the list names the variables for envsubst; it must not expand
envsubst '${NGINX_PORT} ${GATEWAY_UPSTREAM}' < "$1" > "$2"
