# One image for every role: `foley api` (default), `foley worker`, `foley migrate`,
# `foley emulator`. Built with uv from the lock file; runs as an unprivileged user.
FROM python:3.11-slim AS build
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never
RUN pip install --no-cache-dir uv==0.13.8
WORKDIR /app
# Dependencies first: this layer is reused until the lock file changes. `--no-dev` also leaves
# out the `embedded` extra (the PostgreSQL of `foley up`): here the database is always external.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY app ./app
COPY emulator ./emulator
COPY migrations ./migrations
RUN uv sync --frozen --no-dev \
 && python -m compileall -q app emulator migrations

FROM python:3.11-slim
# A fixed numeric uid/gid: Kubernetes' runAsNonRoot can verify it, and volumes can be owned by it.
RUN groupadd --system --gid 10001 foley \
 && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/foley foley \
 && mkdir -p /data && chown 10001:10001 /data
WORKDIR /app
# Owned by root: the process cannot change its own code. Everything, the project's own sources
# included (uv compiles only site-packages), is compiled in the build stage: with a read-only
# root filesystem nothing would be written, and each start would compile again.
COPY --from=build /app /app
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    FOLEY_DATA_DIR=/data \
    FOLEY_LOG_FORMAT=json
USER 10001:10001
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
CMD ["foley", "api", "--host", "0.0.0.0", "--port", "8000"]
