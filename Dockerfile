# The gateway in a container: runtime requirements only, a non-root user, PORT honoured.
#   docker build -t gateway .                      (the gateway, the default last stage)
#   docker build -t gateway-samples --target samples .   (the five sample services, for compose.yaml)
FROM python:3.11-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY requirements.txt ./
RUN pip install -r requirements.txt \
    && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin gateway

FROM runtime AS samples
COPY samples ./samples
USER gateway
EXPOSE 3001 3002 3003 3004 3005
CMD ["python", "-m", "samples", "all", "--host", "0.0.0.0"]

FROM runtime AS gateway
COPY app.py wsgi.py gunicorn.conf.py ./
COPY gateway ./gateway
COPY blueprints ./blueprints
USER gateway
ENV PORT=3000
EXPOSE 3000
# /health answers 200 while the worker serves, 503 once it drains; python -c keeps curl out of the image.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '3000'), timeout=2)"]
# The Procfile's web command, word for word (a test keeps the two equal).
CMD ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
