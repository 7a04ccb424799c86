# syntax=docker/dockerfile:1
# lock-monitor image: stage 1 builds wheels (the project and its dependencies), stage 2 installs
# them into a clean slim image with no build tools and no source tree. Runs as a numeric non-root
# user and writes nothing at runtime, so it works with readOnlyRootFilesystem.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY lock_monitor ./lock_monitor
RUN pip wheel --wheel-dir /wheels .

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="lock-monitor" \
      org.opencontainers.image.description="Prometheus exporter for distributed locks in Redis" \
      org.opencontainers.image.licenses="MIT"
# No .pyc writes at runtime (pip already compiled them at install time), unbuffered logs.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# The wheels are bind-mounted from the build stage, so they never land in a layer.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels lock-monitor
USER 10001:10001
EXPOSE 9150
ENTRYPOINT ["lock-monitor"]
CMD ["run"]
