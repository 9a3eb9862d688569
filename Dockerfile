# syntax=docker/dockerfile:1
# Switchyard container image. Guide: docs/deployment.md ("Docker Compose").
#
#   docker build -t switchyard .
#   docker run -d --name switchyard -p 127.0.0.1:8080:8080 -v switchyard-data:/data \
#     --stop-timeout 45 switchyard
#
# Inside the container Switchyard binds 0.0.0.0, so authentication stays on (it refuses
# --no-auth on a non-loopback address). The first start prints an admin key once: docker logs.

ARG PYTHON_IMAGE=python:3.11-slim

# ---- build: install Switchyard and its dependencies into a virtual environment ----
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# Every dependency ships manylinux wheels for CPython 3.11, so no compiler is needed.
RUN python -m venv /opt/switchyard \
    && /opt/switchyard/bin/pip install --no-compile . \
    && /opt/switchyard/bin/switchyard --version

# ---- runtime: the virtual environment only, run by an unprivileged user ----
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="Switchyard" \
      org.opencontainers.image.description="Self-hosted OpenAI-compatible model gateway" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/switchyard/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SWITCHYARD_DATA_DIR=/data
RUN groupadd --system --gid 10001 switchyard \
    && useradd --system --uid 10001 --gid switchyard --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin switchyard \
    && install -d -m 0700 -o switchyard -g switchyard /data
COPY --from=build /opt/switchyard /opt/switchyard
# An empty working directory: Switchyard reads a .env file from its working directory.
WORKDIR /srv/switchyard
USER 10001:10001
# data_dir: the SQLite database, secret.key and the pid file (keep it; with PostgreSQL and
# SWITCHYARD_SECRET_KEY set it only holds the pid file).
VOLUME ["/data"]
EXPOSE 8080
# Liveness (/health is public). The slim image has no curl: Python's urllib instead.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=4).status != 200)"]
# SIGTERM: stop accepting, drain in-flight requests for --drain-timeout (30 s), exit 0.
# Give it longer than that: docker stop -t 45, or stop_grace_period in Compose.
STOPSIGNAL SIGTERM
ENTRYPOINT ["switchyard"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080", "--data-dir", "/data", "--drain-timeout", "30"]
