# The front door: `make repro` then `make test`. Both create .venv on first use.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
BIN := $(CURDIR)/$(VENV)/bin
N ?=
# make server: the MLflow tracking server all workers log to (MLFLOW_TRACKING_URI=http://HOST:PORT).
# Database backend: sqlite by default, PostgreSQL by URL (make server MLFLOW_BACKEND_STORE_URI=postgresql://...).
MLFLOW_HOST ?= 127.0.0.1
MLFLOW_PORT ?= 5000
MLFLOW_BACKEND_STORE_URI ?= sqlite:///$(CURDIR)/mlflow.db
MLFLOW_ARTIFACTS_DESTINATION ?= $(CURDIR)/mlartifacts
MLFLOW_SERVER_ARGS ?=
# make worker STORAGE=postgresql://user:pw@db:5432/optuna N=10: one of many search workers on one
# shared study (STORAGE empty: $OPTUNA_STORAGE / search.storage / optuna.db, as make search).
STORAGE ?=
# make dashboard DASHBOARD_PORT=8081; make ui MLFLOW_PORT=5001 (also what `make server` listens on)
DASHBOARD_PORT ?= 8080
# make plots REVS="exp-a exp-b": the experiments' plots on one chart (dvc plots diff); empty: the workspace
REVS ?=

export DVC_NO_ANALYTICS := 1
export MLFLOW_DISABLE_TELEMETRY := true
export PATH := $(BIN):$(PATH)

.PHONY: setup repro test test-fast docs search worker promote ui server dashboard compare plots clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	@rm -f $(VENV)/.installed-* && touch $@

repro: setup
	dvc repro

# --durations: the slowest tests, so a test that grows is seen in every CI log. -n: pytest-xdist
# workers (TEST_WORKERS=1: one process); each test file goes to one worker whole, the files on the
# session's pipeline repo together and first (tests/conftest.py), so every expensive fixture is built once.
# --max-worker-restart=0: a worker that dies ends the run with its test named (a replaced worker
# under this scheduling waited forever for work: CI hit its 90 minutes).
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -q --durations=15 $(if $(filter-out 1,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --max-worker-restart=0,)

test: setup
	@eval "$$(.ci/test-deps)"; $(PYTEST)

# the inner loop: everything but the tests that need a real `dvc repro` (marker `slow`)
test-fast: setup
	@eval "$$(.ci/test-deps)"; $(PYTEST) -m "not slow"

# docs/ (and README.md as the home page) as a site in site/, offline; --strict: a broken link fails
docs: setup
	$(BIN)/mkdocs build --strict --quiet --site-dir site

search: setup
	$(PY) -m stages.search $(if $(N),--n-trials $(N),)

# @: the command line would echo the storage password; the worker prints the URL masked.
worker: setup
	@$(PY) -m stages.search --worker $(if $(STORAGE),--storage "$(STORAGE)",) $(if $(N),--n-trials $(N),)

promote: setup
	$(PY) -m stages.promote $(if $(FORCE),--force,)

# Prints the URL of the experiment's training-runs view, then serves the UI on 127.0.0.1:$(MLFLOW_PORT).
ui: setup
	$(PY) -m stages.ui --port $(MLFLOW_PORT)

# @ and a masked echo: the command line would show the store's password.
server: setup
	@echo "mlflow server --backend-store-uri $$($(PY) -c 'import sys; from pipelines.core.urls import mask_url; \
		print(mask_url(sys.argv[1]))' "$(MLFLOW_BACKEND_STORE_URI)") on http://$(MLFLOW_HOST):$(MLFLOW_PORT)"
	@mlflow server --backend-store-uri "$(MLFLOW_BACKEND_STORE_URI)" --serve-artifacts \
		--artifacts-destination "$(MLFLOW_ARTIFACTS_DESTINATION)" \
		--host $(MLFLOW_HOST) --port $(MLFLOW_PORT) $(MLFLOW_SERVER_ARGS)

dashboard: setup
	optuna-dashboard "$${OPTUNA_STORAGE:-sqlite:///$(CURDIR)/optuna.db}" --host 127.0.0.1 --port $(DASHBOARD_PORT)

# dvc exp show narrowed to the headline and the params that differ (fits 120 columns).
compare: setup
	$(PY) -m stages.compare

# dvc plots show (or diff $(REVS)) as dvc_plots/index.html, Vega bundled inline: renders offline.
plots: setup
	$(PY) -m stages.plots $(REVS)

clean:
	rm -rf models metrics reports plots dvc_plots site
