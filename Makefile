# pimc-ray: two commands do everything on a fresh machine.
#   make demo   install into .venv, build the sample archive, start a local STAC API, S3 store (SeaweedFS)
#               and Ray head, submit jobs/pretrain.py then jobs/embed_aoi.py, stop everything, print where
#               the maps are and how to open them
#   make test   install into .venv and run the tests
#   make lint   ruff (lint and format) over the code, mypy over pimc_ray/ (CI runs it before the tests)

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CACHE  := .cache

# Keep Ray on loopback, without telemetry or a cluster token (loopback only);
# keep HOME-writing tools (Ray, DuckDB, torch) inside the project.
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0
export RAY_USAGE_STATS_ENABLED := 0
export RAY_AUTH_MODE := disabled
RUN_ENV := HOME=$(CURDIR)/$(CACHE)/home PATH=$(CURDIR)/$(BIN):$(PATH)

.PHONY: install demo test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@mkdir -p $(CACHE)/home
	@echo "installing into $(VENV) (log: $(CACHE)/install.log) ..."
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install --disable-pip-version-check -e '.[dev]' > $(CACHE)/install.log 2>&1 \
		|| (grep -v "^WARNING: Location" $(CACHE)/install.log | tail -40; echo "install failed, see $(CACHE)/install.log"; exit 1)
	@touch $(STAMP)
	@echo "installed."

demo: install
	@$(RUN_ENV) bash infra/local/demo.sh

test: install
	@mkdir -p $(CACHE)/home
	$(RUN_ENV) $(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check pimc_ray jobs tests benchmarks notebooks
	$(BIN)/ruff format --check pimc_ray jobs tests benchmarks notebooks
	$(BIN)/mypy

bench: install
	$(RUN_ENV) $(BIN)/python benchmarks/bench_recurrence.py

clean:
	rm -rf $(VENV) $(CACHE) data out
