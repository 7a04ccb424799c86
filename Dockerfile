# syntax=docker/dockerfile:1
# lock-monitor image: stage 1 builds wheels (the project and its dependencies), stage 2 installs
# them into a clean slim image with no build tools and no source tree. Runs as a numeric non-root
# user and writes nothing at runtime, so it works with readOnlyRootFilesystem.
#
# Needs BuildKit (RUN --mount): the default builder since Docker 23 and in `docker buildx`; with
# an older Docker run DOCKER_BUILDKIT=1 docker build .
#
# Reproducible: the base image is pinned by digest, every dependency by version and by the hashes
# of its files (constraints.txt, build-constraints.txt; regenerate with the command in their
# header after changing pyproject.toml).
# The digest below could not be verified where it was written (no registry access there). Before
# relying on it, and to move to a newer base (security fixes), re-pin it from the Digest line of
#   docker buildx imagetools inspect python:3.11-slim-bookworm
ARG PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# The dependencies: exactly the pinned versions, each file checked against its hashes.
COPY constraints.txt build-constraints.txt ./
RUN pip wheel --require-hashes --no-deps --wheel-dir /wheels -r constraints.txt \
    && cp constraints.txt /wheels/
# The project's own wheel, built with the pinned setuptools rather than whatever an isolated
# build environment would fetch.
RUN pip install --require-hashes --no-deps -r build-constraints.txt
COPY pyproject.toml README.md LICENSE ./
COPY lock_monitor ./lock_monitor
RUN pip wheel --no-deps --no-build-isolation --wheel-dir /wheels .

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="lock-monitor" \
      org.opencontainers.image.description="Prometheus exporter for distributed locks in Redis" \
      org.opencontainers.image.licenses="MIT"
# No .pyc writes at runtime (pip already compiled them at install time), unbuffered logs.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# The wheels are bind-mounted from the build stage, so they never land in a layer; the hashes are
# checked again on install.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels --require-hashes -r /wheels/constraints.txt \
    && pip install --no-index --no-deps /wheels/lock_monitor-*.whl
USER 10001:10001
EXPOSE 9150
# /healthz answers 200 while the process serves (docker ps: healthy / unhealthy). Kubernetes
# ignores HEALTHCHECK and uses the manifests' probes.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('LOCK_MONITOR_PORT', '9150') + '/healthz', timeout=4)"]
ENTRYPOINT ["lock-monitor"]
CMD ["run"]
