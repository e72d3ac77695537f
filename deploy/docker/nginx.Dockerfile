# nginx in front of the gateways (deploy/nginx/aiq.conf): Debian's nginx, the same build
# tests/test_nginx_proxy.py runs the config with.
#
#   docker build -f deploy/docker/nginx.Dockerfile -t aiq-nginx .
#
# At start deploy/nginx/render.sh fills the template /etc/nginx/templates/aiq.conf (compose
# mounts deploy/nginx/aiq.conf there) from NGINX_PORT, GATEWAY_UPSTREAM and MAX_BODY_BYTES.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive \
    NGINX_PORT=80 \
    GATEWAY_UPSTREAM=gateway:8000 \
    MAX_BODY_BYTES=1048576
# Versions are the base release's; pinning Debian revisions would break its security updates.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends nginx-light gettext-base curl ca-certificates \
 && rm -rf /var/lib/apt/lists/* /etc/nginx/sites-enabled/default \
 && ln -sf /dev/stdout /var/log/nginx/access.log \
 && ln -sf /dev/stderr /var/log/nginx/error.log
COPY deploy/nginx/aiq.conf /etc/nginx/templates/aiq.conf
COPY deploy/nginx/render.sh /usr/local/bin/aiq-nginx-render
EXPOSE 80
# Through nginx to a gateway: healthy while nginx serves and some gateway answers /health.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
  CMD ["sh", "-c", "curl -fsS -o /dev/null \"http://127.0.0.1:${NGINX_PORT}/health\""]
# SIGQUIT: finish the requests in flight, then stop (the gateways end their SSE streams).
STOPSIGNAL SIGQUIT
CMD ["sh", "-c", "aiq-nginx-render /etc/nginx/templates/aiq.conf /etc/nginx/conf.d/aiq.conf && exec nginx -g 'daemon off;'"]
