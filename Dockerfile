# The proxy, and the simulator and demo (same package: `layers-proxy simulate`, `layers-proxy demo`).
# The build context is only pyproject.toml, README.md and proxy/ (see .dockerignore).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY proxy ./proxy
RUN pip install --no-cache-dir . && useradd --system --uid 10001 proxy
USER proxy
EXPOSE 8080
# Settings come from the environment (docs/configuration.md); in a container the proxy must listen
# on 0.0.0.0. `docker run IMAGE check-config` validates a configuration without serving.
ENV PROXY_HOST=0.0.0.0 PROXY_PORT=8080
# Liveness of `serve` on whatever PROXY_PORT says. The simulator serves no /healthz: compose gives
# it its own check (see docker-compose.yml).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PROXY_PORT', '8080'), timeout=2)"]
ENTRYPOINT ["layers-proxy"]
CMD ["serve"]
