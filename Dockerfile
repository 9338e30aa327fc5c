# The service's image, in two stages (README, "Docker"; `make image` builds and smoke-tests it).
# - build: the service's wheel (card files and fixture set inside it) and the wheels of all its
#   dependencies, at the versions constraints.txt pins (`make constraints` regenerates it),
#   installed into /opt/venv with the PostgreSQL driver (the `postgres` extra);
# - the final stage: that venv on a slim Python, run by a numeric non-root user. No pip, no
#   setuptools, no source tree, no tests, no fixture generator.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY constraints.txt ./
# The build backend at its pinned version: the wheel is built without build isolation, so that
# it too comes from constraints.txt.
RUN pip install --constraint constraints.txt setuptools
COPY pyproject.toml README.md MANIFEST.in build_content.py ./
COPY cds_service ./cds_service
COPY cards ./cards
COPY docs/sources.md docs/codes.md ./docs/
COPY fixtures/patient-view ./fixtures/patient-view
COPY fixtures/order-select ./fixtures/order-select
COPY fixtures/order-sign ./fixtures/order-sign
# Every wheel first, then an install from those wheels alone (no index): what the venv gets is
# exactly what constraints.txt says, and the service cannot be taken from anywhere else.
RUN pip wheel --no-build-isolation --constraint constraints.txt --wheel-dir /wheels '.[postgres]' \
    && python -m venv --without-pip /opt/venv \
    && pip --python /opt/venv/bin/python install --no-index --find-links /wheels \
        --constraint constraints.txt 'calcinosis-cds[postgres]'

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="calcinosis-cds" \
      org.opencontainers.image.description="CDS Hooks 2.0 service for calcinosis in systemic sclerosis" \
      org.opencontainers.image.licenses="LicenseRef-Proprietary"
COPY --from=build /opt/venv /opt/venv
# Nothing installs anything at run time: the base image's pip and setuptools go. The user is
# numeric so that Kubernetes' runAsNonRoot can verify it.
RUN python -m pip uninstall --yes --quiet pip setuptools wheel \
    && groupadd --system --gid 10001 cds \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin cds \
    && mkdir /data \
    && chown 10001:10001 /data

# Defaults: SQLite on the /data volume; set DATABASE_URL=postgresql+psycopg://... to share
# state between instances (the driver is installed).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DATABASE_URL=sqlite:////data/calcinosis-cds.sqlite3 \
    PORT=8080 \
    WEB_CONCURRENCY=2
VOLUME ["/data"]
USER 10001:10001
EXPOSE 8080

# Readiness: 503 (unhealthy) while the store cannot be written.
HEALTHCHECK --interval=30s --timeout=3s --start-period=15s --retries=3 \
    CMD ["/opt/venv/bin/python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('PORT', '8080'), timeout=2)"]

# gunicorn with the service's configuration (JSON logs, metrics of all workers), as PID 1: it
# stops gracefully on SIGTERM. PORT and WEB_CONCURRENCY are read by the command.
STOPSIGNAL SIGTERM
CMD ["calcinosis-cds", "serve", "--host", "0.0.0.0"]
