# syntax=docker/dockerfile:1
# genserve: multi-stage build. The builder compiles llama-cpp-python into a wheel; the runtime
# image is slim, runs as a non-root user and listens on 0.0.0.0:8000.

FROM python:3.11-slim-bookworm AS builder
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*
ENV CMAKE_ARGS="-DGGML_NATIVE=OFF" \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
RUN pip wheel --wheel-dir /wheels ".[local]"

FROM python:3.11-slim-bookworm AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 genserve \
    && mkdir /data \
    && chown genserve:genserve /data
COPY --from=builder /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels "genserve[local]" \
    && rm -rf /wheels
WORKDIR /home/genserve
USER 10001:10001
ENV GENSERVE_HOST=0.0.0.0 \
    GENSERVE_PORT=8000 \
    GENSERVE_DATA_DIR=/data \
    PYTHONUNBUFFERED=1
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["python", "-m", "app"]
