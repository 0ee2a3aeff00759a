# Slipway: a build service for container applications. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV    := .venv
PY      := $(VENV)/bin/python
SLIPWAY := $(VENV)/bin/slipway
APT_PACKAGES := docker.io docker-registry busybox-static git skopeo iptables iproute2 procps
PYTEST_ARGS ?=
# The local rack's base port for up and demo, from make's command line alone (make demo
# PORT=7500; unset: the rack's own, else 7400). A PORT in the environment is left alone:
# it is often some app's.
RACK_PORT := $(if $(filter command line,$(origin PORT)),$(PORT))

.PHONY: help setup protos check-protos up down demo test lint bench

help: ## List the targets and the layout they work on
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-13s %s\n", $$1, $$2}'
	@echo
	@echo "Layout (README, Layout; make lint checks the import rules):"
	@echo "  client/kernel    grpc-free kernel shared by services and client"
	@echo "  client/api       typed client library (services call each other with it)"
	@echo "  client/cli       the slipway command; no service imports it"
	@echo "  services/common  shared by services: server, interceptor, one adapter per dependency"
	@echo "  services/NAME    archive, builder, registry, metadata: one service each"
	@echo "  protos/          the wire contract and its generated code"

setup: $(VENV)/.installed ## Install what is missing (Debian packages, Python deps), start the engine, seed busybox
	@$(PY) -m client.cli.localrack.engine

$(VENV)/.installed: pyproject.toml
	@scripts/install-system $(APT_PACKAGES)
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $@

protos: $(VENV)/.installed ## Regenerate the Python code and its typed stubs (.pyi, mypy-protobuf) from protos/
	@PYTHON=$(PY) scripts/gen-protos

check-protos: $(VENV)/.installed ## Fail when the committed generated code or stubs differ from protos/
	@PYTHON=$(PY) scripts/gen-protos --check

up: setup ## Start the local rack (= slipway rack start; PORT=BASE for another base port)
	@$(SLIPWAY) rack start $(if $(RACK_PORT),--port $(RACK_PORT))

down: ## Stop the local rack (= slipway rack stop)
	@$(SLIPWAY) rack stop

demo: up ## Build examples/hello on the local rack and show the build (PORT=BASE as for up)
	@scripts/demo $(SLIPWAY)

test: setup lint check-protos ## Install what is missing, lint, check the generated code, run every test (end to end on SQLite, then again on PostgreSQL)
	@$(VENV)/bin/pytest $(PYTEST_ARGS)
	@# The scale-out module runs on PostgreSQL already; the hosts modules reach no PostgreSQL.
	@SLIPWAY_E2E_DATABASE=postgresql $(VENV)/bin/pytest tests/e2e --ignore=tests/e2e/test_scaleout.py --ignore=tests/e2e/test_across_hosts.py --ignore=tests/e2e/test_hosts.py --ignore=tests/e2e/test_ecr.py $(PYTEST_ARGS)

bench: setup ## Move a 1 GiB build rack to rack (docker save|load as reference); four-stage BuildKit vs legacy; six builds on one vs three builders; a 512 MiB context built, rebuilt and rebuilt with one change vs docker build; write bench/results.json
	@$(PY) bench/run.py

lint: $(VENV)/.installed ## ruff (lint and format check), mypy, and the import contracts (lint-imports)
	@$(VENV)/bin/ruff check client services tests
	@$(VENV)/bin/ruff format --check client services tests
	@$(VENV)/bin/mypy client services
	@$(VENV)/bin/lint-imports
