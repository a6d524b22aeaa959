# genserve's image, two targets:
#   docker build -t genserve .                            the embedded model (SmolLM2 via llama.cpp)
#   docker build --target upstream -t genserve:upstream . OpenAI-compatible upstreams only
#   --build-arg PROBES=true                               either, with the bias probes' statistics
#                                                         and lexicons (about 150 MB more)
# Dependencies are installed from pyproject.toml before the code is copied, so a code-only change
# rebuilds only the small last layers. pip's cache mount keeps the compiled llama-cpp-python wheel
# when the dependency list changes. The runtime stages copy a finished virtualenv: no wheels, no
# compilers, no pip cache in the image.

FROM python:3.11-slim-bookworm AS requirements
WORKDIR /src
COPY pyproject.toml ./
# The dependency lists alone: a change elsewhere in pyproject.toml (tool settings, dev extra) leaves
# these files identical, so the layers built from them stay cached.
RUN python -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
open("requirements.txt", "w").write("\n".join(p["dependencies"]) + "\n"); \
open("requirements-local.txt", "w").write("\n".join(p["optional-dependencies"]["local"]) + "\n"); \
open("requirements-probes.txt", "w").write("\n".join(p["optional-dependencies"]["probes"]) + "\n")'

FROM python:3.11-slim-bookworm AS builder
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*
# Portable CPU flags, the same as the Makefile's, so the image runs on any x86-64.
ENV CMAKE_ARGS="-DGGML_NATIVE=OFF" \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src

FROM builder AS deps-upstream
COPY --from=requirements /src/requirements.txt ./
RUN --mount=type=cache,target=/root/.cache/pip pip install -r requirements.txt

FROM deps-upstream AS deps-embedded
COPY --from=requirements /src/requirements-local.txt ./
RUN --mount=type=cache,target=/root/.cache/pip pip install -r requirements-local.txt

# The bias probes' dependencies, only when asked for: without them /v1/probes answers 501.
FROM deps-upstream AS probes-upstream
ARG PROBES=false
COPY --from=requirements /src/requirements-probes.txt ./
RUN --mount=type=cache,target=/root/.cache/pip if [ "$PROBES" = true ]; then pip install -r requirements-probes.txt; fi

FROM deps-embedded AS probes-embedded
ARG PROBES=false
COPY --from=requirements /src/requirements-probes.txt ./
RUN --mount=type=cache,target=/root/.cache/pip if [ "$PROBES" = true ]; then pip install -r requirements-probes.txt; fi

# What the service never uses at run time: pip and setuptools (nothing is installed at run time)
# the debug symbols of the compiled extensions (uvloop's alone are 11 MB), the packages' own test
# suites and test helpers (numpy's and scipy's are 40 MB; SQLAlchemy's, Alembic's and the rest 4 MB). Libraries that auditwheel vendored (`*.libs/`) keep their symbols: it
# rewrote their headers, and strip breaks them.
FROM probes-upstream AS venv-upstream
ARG SITE=/opt/venv/lib/python3.11/site-packages
RUN python -m pip uninstall --yes --quiet pip setuptools \
    && find /opt/venv -name '*.so*' -type f -not -path '*.libs/*' -exec strip --strip-unneeded {} + \
    && find "$SITE" -type d -name tests -prune -exec rm -rf {} + \
    && rm -rf "${SITE:?}/sqlalchemy/testing" "${SITE:?}/alembic/testing" "${SITE:?}/mako/testing"

# Also llama-cpp-python's second copy of its libraries in site-packages/lib and include/ (left by
# its CMake install; it loads those in llama_cpp/lib).
FROM probes-embedded AS venv-embedded
ARG SITE=/opt/venv/lib/python3.11/site-packages
RUN python -m pip uninstall --yes --quiet pip setuptools \
    && find /opt/venv -name '*.so*' -type f -not -path '*.libs/*' -exec strip --strip-unneeded {} + \
    && rm -rf "${SITE:?}/lib" "${SITE:?}/include" \
    && find "$SITE" -type d -name tests -prune -exec rm -rf {} + \
    && rm -rf "${SITE:?}/sqlalchemy/testing" "${SITE:?}/alembic/testing" "${SITE:?}/mako/testing"

# The project itself, installed without its dependencies (they are in the layers above).
FROM deps-upstream AS app
COPY pyproject.toml README.md ./
COPY app ./app
# Moved aside after the install (which byte-compiles it in place) to be copied without the venv.
RUN --mount=type=cache,target=/root/.cache/pip pip install --no-deps . \
    && mkdir /out \
    && mv /opt/venv/lib/python3.11/site-packages/app /opt/venv/lib/python3.11/site-packages/genserve-*.dist-info /out/

FROM python:3.11-slim-bookworm AS runtime-base
RUN useradd --create-home --uid 10001 --user-group genserve \
    && mkdir /data \
    && chown genserve:genserve /data
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /home/genserve
VOLUME ["/data"]
EXPOSE 8000
# Checks the container's own non-loopback address, the one a published port forwards to: a
# service listening on 127.0.0.1 inside the container is unreachable, and reported unhealthy.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-m", "app.healthcheck", "/healthz"]
# The container's own facts, given as arguments so that no environment (`docker run -e`, compose's
# env_file, a copied .env) can move them: listen on every interface, keep the data on the volume.
CMD ["python", "-m", "app", "--host", "0.0.0.0", "--port", "8000", "--data-dir", "/data"]

FROM runtime-base AS upstream
COPY --from=venv-upstream /opt/venv /opt/venv
COPY --from=app /out/ /opt/venv/lib/python3.11/site-packages/
USER 10001:10001

# The default target (last): the embedded model, served when no upstream is configured.
FROM runtime-base AS embedded
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=venv-embedded /opt/venv /opt/venv
COPY --from=app /out/ /opt/venv/lib/python3.11/site-packages/
USER 10001:10001
