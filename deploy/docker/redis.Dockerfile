# Redis for aiq: Debian's redis-server (7.0), run by compose with AOF and noeviction
# (deploy/compose.yaml). Built from the same base as the other images, so the whole stack
# builds without an image registry.
#
#   docker build -f deploy/docker/redis.Dockerfile -t aiq-redis .
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive
# Versions are the base release's; pinning Debian revisions would break its security updates.
# uid/gid 999 as in the official redis image; the package then reuses the user.
# hadolint ignore=DL3008
RUN groupadd --system --gid 999 redis \
 && useradd --system --uid 999 --gid redis --home-dir /var/lib/redis --shell /usr/sbin/nologin redis \
 && apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -o redis -g redis /data
USER 999:999
WORKDIR /data
EXPOSE 6379
HEALTHCHECK --interval=5s --timeout=3s --start-period=5s --retries=5 \
  CMD ["sh", "-c", "redis-cli ping | grep -q PONG"]
# Persistence as production Redis for aiq needs it (docs/ARCHITECTURE.md): AOF fsynced every
# second, and never evict a key (an evicted job record is a lost job).
CMD ["redis-server", "--dir", "/data", "--appendonly", "yes", "--appendfsync", "everysec", \
     "--maxmemory-policy", "noeviction", "--bind", "0.0.0.0", "--protected-mode", "no"]
