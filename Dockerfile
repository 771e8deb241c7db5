# The proxy (and the simulator: same package, `layers-proxy simulate`).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY proxy ./proxy
RUN pip install --no-cache-dir . && useradd --system --uid 10001 proxy
USER proxy
EXPOSE 8080
# Settings come from the environment (see README); PROXY_HOST must be 0.0.0.0 in a container.
ENV PROXY_HOST=0.0.0.0 PROXY_PORT=8080
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)" || exit 1
ENTRYPOINT ["layers-proxy"]
CMD ["serve"]
