# syntax=docker/dockerfile:1
# syncd container image.
#
#   docker build -t syncd .
#   docker run --rm syncd --help
#
# Stage 1 builds the syncd wheel from the source tree; stage 2 installs that wheel
# (and binary wheels of its dependencies, never an sdist, so nothing needs a
# compiler) into a slim Python with no build tools, and runs it as a non-root user.
# tests/deploy/test_dockerfile.py runs these same pip commands in clean virtual
# environments and the same entrypoint (`syncd --help`, `syncd migrate`).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY . /src
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels /src

FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m pip install --no-cache-dir --only-binary=:all: /wheels/syncd-*.whl
# A fixed numeric uid/gid so Kubernetes' runAsNonRoot can verify it and mounted
# secrets can be made readable to it (fsGroup / chown 10001).
RUN groupadd --system --gid 10001 syncd \
    && useradd --system --uid 10001 --gid syncd --home-dir /var/lib/syncd --create-home \
       --shell /usr/sbin/nologin syncd \
    && mkdir -p /etc/syncd
# The working directory is the only writable place syncd needs (the embedded
# SQLite default lives here when no database URL is given).
WORKDIR /var/lib/syncd
USER 10001:10001

# Configuration: mount syncd.toml (e.g. at /etc/syncd/syncd.toml) and set
# SYNCD_CONFIG to it, or drop it at /var/lib/syncd/syncd.toml. The database URL
# (it carries a password) comes from SYNCD_DATABASE_URL; vendor secrets from
# environment variables (*_env) or mounted files (*_file, e.g. /run/secrets/...).
# In a container the config must listen on all interfaces: [daemon] listen = "0.0.0.0:8080".
EXPOSE 8080
# No curl in slim images: Python asks /healthz. SYNCD_HEALTHCHECK_URL overrides the address.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ.get('SYNCD_HEALTHCHECK_URL', 'http://127.0.0.1:8080/healthz'), timeout=4)"]
ENTRYPOINT ["syncd"]
CMD ["run"]
