# syntax=docker/dockerfile:1
# Agentplane server image. Runs against an external PostgreSQL (DATABASE_URL); see docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN groupadd --system --gid 10001 agentplane \
    && useradd --system --uid 10001 --gid agentplane --home-dir /home/agentplane --create-home \
       --shell /usr/sbin/nologin agentplane \
    && mkdir -p /var/lib/agentplane \
    && chown agentplane:agentplane /var/lib/agentplane \
    && python -m venv "$VIRTUAL_ENV"

WORKDIR /srv/agentplane

# Dependencies first, from pyproject.toml alone, so that a source change does not reinstall them.
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['server']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The whole source tree: the server finds alembic.ini and migrations/ relative to the repository root
# (app/db/migrate.py's PROJECT_ROOT), hence the editable install from this directory.
COPY . .
RUN pip install --no-deps -e . \
    && python -c "import app.main, app.db.migrate as m; assert (m.PROJECT_ROOT / 'alembic.ini').is_file()"

USER agentplane

# Only used when DATABASE_URL is unset (the embedded PostgreSQL); docker-compose sets DATABASE_URL.
ENV AGENTPLANE_DATA_DIR=/var/lib/agentplane \
    AGENTPLANE_HOST=0.0.0.0 \
    AGENTPLANE_PORT=8080

EXPOSE 8080

# /readyz answers 200 once the database is reachable and migrated to head, 503 otherwise.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; url = 'http://127.0.0.1:%s/readyz' % os.environ.get('AGENTPLANE_PORT', '8080'); sys.exit(0 if urllib.request.urlopen(url, timeout=4).status == 200 else 1)"]

CMD ["agentplane", "serve", "--host", "0.0.0.0"]
