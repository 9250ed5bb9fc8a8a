# syntax=docker/dockerfile:1
# One image for both services of docker-compose.prod.yml:
#   api       gunicorn -c config/gunicorn.conf.py config.wsgi:application   (port 8000)
#   recorder  python -m recorder                                             (port RECORDER_PORT, 3100)
# The recorder drives Debian's chromium through Playwright for Python (no `playwright install`,
# no browser download) and converts audio with Debian's ffmpeg; the api needs ffmpeg too.

# ---- build stage: dependencies into a virtualenv ---------------------------------------
FROM python:3.11-slim-bookworm AS deps
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
COPY requirements.txt /tmp/requirements.txt
RUN /opt/venv/bin/pip install --no-cache-dir -r /tmp/requirements.txt

# ---- recorder web assets: the Agora Web SDK bundle the recorder's page loads -------------
FROM node:22-bookworm-slim AS recorder-assets
WORKDIR /src
COPY recorder/package.json recorder/package-lock.json recorder/
RUN npm ci --prefix recorder --omit=dev --no-audit --no-fund

# ---- runtime ---------------------------------------------------------------------------
FROM python:3.11-slim-bookworm

RUN apt-get update \
 && apt-get install -y --no-install-recommends \
        ffmpeg \
        chromium \
        fonts-liberation \
        ca-certificates \
 && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 memharbor \
 && useradd --system --uid 10001 --gid memharbor --create-home --home-dir /home/memharbor \
        --shell /usr/sbin/nologin memharbor

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    GUNICORN_BIND=0.0.0.0:8000 \
    LOG_DIR=/app/logs \
    RECORDINGS_DIR=/app/var/recordings \
    RECORDER_PORT=3100

COPY --from=deps /opt/venv /opt/venv

WORKDIR /app
# Application code stays owned by root (read-only for the service user); only the
# log and recording directories are writable.
COPY . /app
COPY --from=recorder-assets /src/recorder/node_modules/agora-rtc-sdk-ng/AgoraRTC_N-production.js \
     /app/recorder/static/vendor/AgoraRTC_N-production.js
RUN mkdir -p /app/logs /app/var/recordings \
 && chown memharbor:memharbor /app/logs /app/var/recordings

USER memharbor

EXPOSE 8000

# slim has no curl: probe the liveness endpoint (no I/O behind it) with Python.
# The recorder service overrides this healthcheck in docker-compose.prod.yml.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os,sys,urllib.request; port=os.environ.get('GUNICORN_BIND','0.0.0.0:8000').rsplit(':',1)[-1]; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:%s/api/health/live' % port, timeout=4).status == 200 else 1)"]

# The same image runs the event-stream server (`python -m config.events`, port 8002; compose
# service `events`), the recorder and the analyzer with another command.
CMD ["gunicorn", "-c", "config/gunicorn.conf.py", "config.wsgi:application"]
