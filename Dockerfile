# syntax=docker/dockerfile:1
# The inference server and its Envoy gateway in one image (docs/deployment.md).
#
#   docker build -t v2-inference-server .
#   docker run --rm -p 8000:8000 -p 8001:8001 v2-inference-server          # both
#   docker run --rm -p 8001:8001 v2-inference-server server --workers 2    # the server only
#
# The build stage runs deploy/docker/build.sh, which tests/integration/test_dockerfile.py
# also runs: change the recipe there, not here.

# Debian bookworm on both stages: the Envoy wheel needs glibc, and the virtual environment
# built in one stage runs in the other only with the same Python at the same path.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# examples/web needs Node.js 20 or newer; bookworm's own nodejs is 18.
ARG NODE_IMAGE=node:20-bookworm-slim

FROM ${NODE_IMAGE} AS node

FROM ${PYTHON_IMAGE} AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN apt-get update \
    && apt-get install -y --no-install-recommends make=4.3-* \
    && rm -rf /var/lib/apt/lists/*
COPY --from=node /usr/local/bin/node /usr/local/bin/node
COPY --from=node /usr/local/lib/node_modules/npm /usr/local/lib/node_modules/npm
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
    && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \
    && node --version && npm --version
WORKDIR /src
COPY . .
# Stubs, models, gateway files, web bundle, then the runtime venv and /opt/app.
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=cache,target=/root/.npm \
    deploy/docker/build.sh /opt/venv /opt/app

FROM ${PYTHON_IMAGE} AS runtime
# tini as PID 1: it forwards SIGTERM to the entrypoint and reaps orphans.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini=0.19.0-* \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 inference \
    && useradd --system --uid 10001 --gid inference --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin inference
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/app /app
COPY deploy/docker/entrypoint.sh /usr/local/bin/entrypoint.sh
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    INFERENCE_MODEL_REPOSITORY=/app/models
WORKDIR /app
# Numeric, so that Kubernetes' runAsNonRoot can check it.
USER 10001:10001
# 8000 REST and gRPC-web (the gateway), 8001 gRPC (the server), 8002 metrics.
EXPOSE 8000 8001 8002
# The server's grpc.health.v1 status ("": every model loaded). A gateway-only container
# probes through the gateway instead, which forwards health checks upstream:
# docker run --health-cmd 'python -m server.probe --address 127.0.0.1:8000' ... gateway
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-m", "server.probe", "--address", "127.0.0.1:8001", "--service", "", "--timeout", "2"]
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/entrypoint.sh"]
CMD ["all"]
