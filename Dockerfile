# syntax=docker/dockerfile:1
# galera-health agent image: a wheel built in a builder stage, installed alone into python:slim.
# No image is published: build it from a checkout and push it to a registry your nodes pull
# from (the chart's image.repository), e.g.
# Build:  docker build -t galera-health:0.2.0 .
#         docker tag galera-health:0.2.0 myregistry.azurecr.io/galera-health:0.2.0
#         docker push myregistry.azurecr.io/galera-health:0.2.0
# Run:    docker run -p 9200:9200 -v /etc/galera-health:/etc/galera-health:ro \
#           galera-health:0.2.0 --config /etc/galera-health/agent.toml
# The install steps (pip wheel; pip install --no-index --find-links) are the ones
# tests/chart/test_packaging.py runs.

ARG PYTHON_VERSION=3.12

FROM python:${PYTHON_VERSION}-slim AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
# .dockerignore leaves out galera_health/demo.py and testbed.py: they start mariadbd, which this
# image does not have (`galera-health demo` then says so in one line).
COPY galera_health ./galera_health
# The project's wheel and the wheels of all its dependencies (all pure Python or manylinux).
RUN pip wheel --wheel-dir /wheels .

FROM python:${PYTHON_VERSION}-slim
ARG VERSION=0.2.0
LABEL org.opencontainers.image.title="galera-health" \
      org.opencontainers.image.description="HTTP health agent for MariaDB Galera nodes" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="MIT"
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# Only the wheels, from the builder, offline; then pip itself goes: nothing left to build with.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels galera_health \
    && python -m pip uninstall -y pip \
    && groupadd --system --gid 10001 galera-health \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin galera-health
# Numeric, so Kubernetes can check runAsNonRoot without resolving a name.
USER 10001:10001
EXPOSE 9200
# curl is not in slim: python's urllib asks /livez (the agent, never the database).
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:9200/livez', timeout=2).status != 200)"]
ENTRYPOINT ["galera-health", "serve"]
