# The connector daemon as an image. Two stages: `build` installs the package (built from this
# source tree) into a virtualenv; the final stage copies only that virtualenv onto a clean base (no compiler, no pip,
# no source tree), runs as a non-root user and starts `order-connector` in exec form, so SIGTERM
# reaches the daemon itself and it drains (limits.drain_timeout_s) before exiting.
#
#   docker build -t order-status-connector .
#   docker run -v $PWD/connector.yaml:/etc/order-connector/connector.yaml:ro \
#     -e META_ACCESS_TOKEN=... order-status-connector
#
# BASE_IMAGE defaults to the official slim Python image; machines without a registry pass a
# locally built Debian image (deploy/docker/base-images.sh: local/debian-python:bookworm).
# Any base with python3 (>= 3.11) and its venv module works.
ARG BASE_IMAGE=python:3.12-slim-bookworm

FROM ${BASE_IMAGE} AS build
# Lets `./run compose-test` prune the intermediate images this stage leaves behind.
LABEL org.order-status-connector.stage=build
# pip reads PIP_* from the environment: PIP_INDEX_URL for a mirror, or PIP_NO_INDEX=1 to install
# only from deploy/docker/wheels/ (a wheelhouse `./run compose-test` fills on the host, for
# machines whose containers cannot reach an index). Empty wheelhouse and no args: PyPI.
ARG PIP_INDEX_URL
ARG PIP_NO_INDEX
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_FIND_LINKS=/wheels \
    PYTHONDONTWRITEBYTECODE=1
COPY deploy/docker/wheels/ /wheels/
COPY pyproject.toml README.md LICENSE /src/
COPY connector /src/connector
# pip and setuptools are build tools: installed, they leave the runtime venv again.
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --quiet /src \
 && /opt/venv/bin/pip uninstall --quiet --yes pip setuptools \
 && /opt/venv/bin/python -m compileall -q /opt/venv/lib \
 && /opt/venv/bin/order-connector --version

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="order-status-connector" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.description="Kafka order.status.changed events to provider order-status requests"
# A fixed numeric uid/gid so Kubernetes can check runAsNonRoot without a passwd lookup (written
# directly: a minimal Debian root has no useradd).
RUN echo "connector:x:10001:" >>/etc/group \
 && echo "connector:x:10001:10001:order-status-connector:/nonexistent:/usr/sbin/nologin" >>/etc/passwd
COPY --from=build /opt/venv /opt/venv
# Configuration: a file mounted at /etc/order-connector/connector.yaml, plus ORDER_CONNECTOR_*
# overrides and the secrets the file names as env:VARIABLE, from the environment. In a container
# the HTTP server (probes, /metrics, webhooks) must listen on every interface: the environment
# overrides the file's server.host.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ORDER_CONNECTOR_SERVER__HOST=0.0.0.0
WORKDIR /etc/order-connector
USER 10001:10001
EXPOSE 8080
# /healthz answers while the daemon is alive and serving (port: server.port, 8080 unless
# ORDER_CONNECTOR_SERVER__PORT says otherwise).
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os,sys,urllib.request as u; sys.exit(0 if u.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('ORDER_CONNECTOR_SERVER__PORT', '8080'), timeout=2).status == 200 else 1)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["order-connector"]
CMD ["run", "--config", "/etc/order-connector/connector.yaml"]
