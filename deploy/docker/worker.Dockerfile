# One image per worker type (docs/DEPLOYMENT.md). Build args choose the type:
#
#   docker build -f deploy/docker/worker.Dockerfile \
#     --build-arg WORKER_TYPE=pytorch-2.1 --build-arg EXTRA=pytorch_2_1 -t aiq-worker-pytorch-2.1 .
#
#   WORKER_TYPE  a type of schemas/catalogue.py (aiq types); baked in as WORKER_TYPE
#   EXTRA        its uv extra (sklearn, pytorch_2_0, pytorch_2_1, pytorch_2_0_gpu,
#                pytorch_2_1_gpu, tensorflow; empty for diagnostic); checked against the type
#   BASE_IMAGE   debian:bookworm-slim, a local debootstrap image (deploy/docker/build-base.sh),
#                or for -gpu types a CUDA base such as nvidia/cuda:12.1.1-runtime-ubuntu22.04
#   UV_VERSION   the uv that installs uv.lock (uv sync --locked: the lock is never re-resolved)
#
# The build context is the repository root (.dockerignore lets through only what is needed).
ARG BASE_IMAGE=debian:bookworm-slim

# --- python: the interpreter and tini, shared by the build and the runtime stage -------------
FROM ${BASE_IMAGE} AS python
ENV DEBIAN_FRONTEND=noninteractive \
    LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1
# Versions are the base release's (Debian 12 or Ubuntu 22.04 both ship python3.11 and tini);
# pinning exact Debian revisions would break every security update of the base.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11 tini ca-certificates \
 && rm -rf /var/lib/apt/lists/*

# --- build: uv installs exactly what uv.lock pins for the extra (and s3, for ARTIFACT_URI=s3://)
# into /opt/aiq ------------------------------------------------------------------------------
FROM python AS build
ARG UV_VERSION=0.13.9
ARG EXTRA=sklearn
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11-venv \
 && rm -rf /var/lib/apt/lists/*
# Behind a TLS-intercepting proxy, put its CA (*.crt) in deploy/docker/ca-certificates/: it is
# trusted here, in the build stage only, for the downloads from PyPI.
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
# Dependencies first (the framework's GBs stay cached while the code changes), then aiq itself
# as a regular (non-editable) install: the runtime needs no source tree.
COPY pyproject.toml uv.lock README.md ./
RUN /opt/uv/bin/uv sync --locked --no-dev --no-install-project ${EXTRA:+--extra "$EXTRA"} --extra s3
COPY aiq/ aiq/
COPY schemas/ schemas/
COPY streams/ streams/
COPY consumers/ consumers/
COPY gateway/ gateway/
RUN /opt/uv/bin/uv sync --locked --no-dev --no-editable ${EXTRA:+--extra "$EXTRA"} --extra s3

# --- runtime ---------------------------------------------------------------------------------
FROM python
ARG WORKER_TYPE=sklearn
ARG EXTRA=sklearn
COPY --from=build /opt/aiq /opt/aiq
ENV PATH=/opt/aiq/bin:$PATH \
    WORKER_TYPE=${WORKER_TYPE} \
    DATA_ROOT=/data \
    ARTIFACT_ROOT=/artifacts \
    HOME=/home/aiq
# The type must exist, EXTRA must be its extra, and the framework installed at the version the
# type promises (read from the package metadata): a mismatch fails the build, not the start.
RUN python -c "import os; from importlib.metadata import version; from packaging.specifiers import SpecifierSet; from schemas.catalogue import CATALOGUE; wt = CATALOGUE.get(os.environ['WORKER_TYPE']); assert wt is not None, 'unknown WORKER_TYPE ' + os.environ['WORKER_TYPE']; assert (wt.extra or '') == '${EXTRA}', 'worker type ' + wt.name + ' needs EXTRA=' + (wt.extra or '') + ', not EXTRA=${EXTRA}'; assert wt.extra is None or version(wt.module) in SpecifierSet(wt.version_spec), wt.module + ' ' + version(wt.module) + ' does not satisfy ' + wt.version_spec; print('worker image:', wt.name, wt.module, version(wt.module))" \
 && useradd --system --uid 10001 --user-group --create-home --home-dir /home/aiq aiq \
 && install -d -o aiq -g aiq /data /artifacts
USER 10001:10001
WORKDIR /home/aiq
# Alive and registered: this container's worker process is in the registry (hostname and pid)
# and still heartbeats (aiq/health.py).
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
  CMD ["aiq", "health", "--worker"]
# tini is PID 1: it passes SIGTERM to the worker (which drains for SHUTDOWN_GRACE_S, hands
# back what is left and exits 0) and reaps the children of sklearn's fork server.
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["aiq", "worker"]
