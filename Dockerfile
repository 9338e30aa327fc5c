# Production image: slim Python 3.11, non-root user, gunicorn, health check on /healthz.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY cds_service ./cds_service
COPY cards ./cards
# The synthetic fixture patients, for the card preview page (off with CDS_PRODUCTION=1).
COPY fixtures ./fixtures
RUN pip install . \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin cds \
    && mkdir -p /data && chown cds /data

# Defaults: SQLite on the /data volume; set DATABASE_URL=postgresql+psycopg://... to share
# state between instances.
ENV CDS_CARDS_DIR=/app/cards \
    CDS_FIXTURES_DIR=/app/fixtures \
    DATABASE_URL=sqlite:////data/calcinosis-cds.sqlite3 \
    PORT=8080 \
    WEB_CONCURRENCY=2
VOLUME ["/data"]
USER cds
EXPOSE 8080

HEALTHCHECK --interval=30s --timeout=3s --start-period=15s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8080'), timeout=2)"

# gunicorn with the service's configuration (JSON logs, metrics of all workers); PORT and
# WEB_CONCURRENCY are read by the command.
CMD ["calcinosis-cds", "serve", "--host", "0.0.0.0"]
