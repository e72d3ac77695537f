# The HTTP gateway (docs/DEPLOYMENT.md): the base dependencies only, no ML framework.
#
#   docker build -f deploy/docker/gateway.Dockerfile -t aiq-gateway .
#
#   BASE_IMAGE   debian:bookworm-slim, or a local debootstrap image (deploy/docker/build-base.sh)
#   UV_VERSION   the uv that installs uv.lock (uv sync --locked)
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${BASE_IMAGE} AS python
ENV DEBIAN_FRONTEND=noninteractive \
    LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1
# Versions are the base release's; pinning Debian revisions would break its security updates.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11 tini ca-certificates \
 && rm -rf /var/lib/apt/lists/*

FROM python AS build
ARG UV_VERSION=0.13.9
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11-venv \
 && rm -rf /var/lib/apt/lists/*
# A TLS-intercepting proxy's CA (*.crt in deploy/docker/ca-certificates/), build stage only.
COPY deploy/docker/ca-certificates/ /usr/local/share/ca-certificates/aiq/
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    UV_PYTHON=/usr/bin/python3.11 \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/aiq \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1
RUN update-ca-certificates \
 && python3.11 -m venv /opt/uv \
 && /opt/uv/bin/pip install --no-cache-dir "uv==${UV_VERSION}"
WORKDIR /src
COPY pyproject.toml uv.lock README.md ./
RUN /opt/uv/bin/uv sync --locked --no-dev --no-install-project
COPY aiq/ aiq/
COPY schemas/ schemas/
COPY streams/ streams/
COPY consumers/ consumers/
COPY gateway/ gateway/
RUN /opt/uv/bin/uv sync --locked --no-dev --no-editable

FROM python
COPY --from=build /opt/aiq /opt/aiq
ENV PATH=/opt/aiq/bin:$PATH \
    HOST=0.0.0.0 \
    PORT=8000 \
    HOME=/home/aiq
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/aiq aiq
USER 10001:10001
WORKDIR /home/aiq
EXPOSE 8000
# GET /health: 200 while the gateway answers and Redis does.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
  CMD ["sh", "-c", "aiq health --url \"http://127.0.0.1:${PORT}\" --timeout 3"]
# tini is PID 1 and passes SIGTERM on: the gateway ends its SSE streams and shuts down.
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["aiq", "gateway"]
