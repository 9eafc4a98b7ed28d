# syntax=docker/dockerfile:1
# asana-audit-forwarder: a slim, non-root image that runs on a read-only root
# filesystem. Build:  docker build -t asana-audit-forwarder .
# Run (see docs/operations.md):
#   docker run --read-only -v asana-state:/var/lib/asana-audit-forwarder \
#     -v "$PWD/config.toml:/etc/asana-audit-forwarder/config.toml:ro" \
#     -e ASANA_TOKEN -p 9464:9464 asana-audit-forwarder

ARG PYTHON_IMAGE=python:3.12-slim-bookworm

# -- build: the project's wheel and every dependency's wheel ------------------
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY forwarder ./forwarder
# Dependencies are resolved here, once, so that the runtime stage installs
# offline from exactly these wheels.
RUN python -m pip wheel --no-cache-dir --wheel-dir /wheels .

# -- runtime ------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
ARG SOURCE=https://github.com/asana-audit-forwarder/asana-audit-forwarder
LABEL org.opencontainers.image.title="asana-audit-forwarder" \
      org.opencontainers.image.description="Forwards the Asana audit log to SIEMs with per-sink checkpoints" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.documentation="${SOURCE}/blob/main/docs/operations.md" \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed numeric UID/GID, so that Kubernetes' runAsNonRoot can verify it and
# volume ownership (fsGroup) is predictable.
RUN groupadd --system --gid 10001 forwarder \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin forwarder \
    && mkdir -p /var/lib/asana-audit-forwarder /etc/asana-audit-forwarder \
    && chown 10001:10001 /var/lib/asana-audit-forwarder \
    && chmod 0700 /var/lib/asana-audit-forwarder

# The wheels are bind-mounted, not copied: they never land in a layer.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --no-index --find-links /wheels \
       /wheels/asana_audit_forwarder-*.whl

# The root filesystem may be read-only: bytecode is compiled at install time
# and never written at run time, and the only writable place, the state
# volume, also takes temporary files.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TMPDIR=/var/lib/asana-audit-forwarder

VOLUME ["/var/lib/asana-audit-forwarder"]
WORKDIR /var/lib/asana-audit-forwarder
USER 10001:10001
# The configuration must listen on 0.0.0.0:9464 (server.listen) for this port
# and the health check to reach it.
EXPOSE 9464

# No curl in a slim image: the interpreter asks /healthz itself. urlopen
# raises on any status but 2xx, which exits non-zero.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request as r; r.urlopen('http://127.0.0.1:9464/healthz', timeout=4)"]

# Exec form: the daemon is PID 1 and receives SIGTERM itself; it stops
# fetching, lets batches in flight finish, saves checkpoints and exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["asana-audit-forwarder"]
CMD ["run", "--config", "/etc/asana-audit-forwarder/config.toml"]
