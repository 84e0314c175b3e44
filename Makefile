# mlplatform: one-word verbs. `make demo` and `make test` set up everything they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# `dg` as from the activated venv (without VIRTUAL_ENV, dg warns the venvs may not match)
DG := VIRTUAL_ENV=$(CURDIR)/$(VENV) $(BIN)/dg
export DAGSTER_HOME := $(CURDIR)/.dagster_home

PROBLEM ?= flight_delay
DEMO_START ?= 2013-01-01
DEMO_END ?= 2013-01-28
DEMO_PORT ?= 8765
# a week after the first deployment, replayed on simulated time (Monday 02-04 retrains)
REPLAY_START ?= 2013-01-29
REPLAY_END ?= 2013-02-04
REPLAY_TRIALS ?= 5
# a damaged re-delivery of one accepted day (field case 05: naive local time_hour), refused
# with its reasons, then the corrected export landed again and re-ingested by content hash;
# `make demo BAD_DAY=` skips the step
BAD_DAY ?= 2013-01-16
BAD_DAY_FILE := mlplatform_tests/cases/05_naive_local_time_hour_flights_2013-01-16.csv
# The verbs submit their runs to the instance (one backfill per range; without a daemon the
# command launches them, one process per run). The demo's 28 days of ingestion run in the
# command's process: submitted, each day's run imports its libraries again (a week, measured:
# 15.6 s in-process, 50 s submitted). `make demo DEMO_INGEST=` submits them too.
DEMO_INGEST ?= --in-process
# The second shipped problem after the flights, short: two weeks of hourly temperatures
# (7 days train, 7 hold out), a champion, three forecasts over HTTP and a two-day replay;
# `make demo SECOND=` skips it (its ingestion and features run in-process, like DEMO_INGEST)
SECOND ?= city_temperature
SECOND_START ?= 2010-06-01
SECOND_END ?= 2010-06-14
SECOND_REPLAY_START ?= 2010-06-15
SECOND_REPLAY_END ?= 2010-06-16

.PHONY: venv demo demo-production test lint bench-quick dev mlflow monitor constraints clean spec-docs

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: venv
	$(BIN)/mlplatform land --problem $(PROBLEM) --start $(DEMO_START) --end $(DEMO_END)
	$(BIN)/mlplatform ingest --problem $(PROBLEM) --start $(DEMO_START) --end $(DEMO_END) $(DEMO_INGEST)
ifneq ($(BAD_DAY),)
	@echo "== a damaged re-delivery of flights $(BAD_DAY) (times without their UTC offset) =="
	cp $(BAD_DAY_FILE) $${MLPLATFORM_DATA_DIR:-data}/landing/$(PROBLEM)/flights/$(BAD_DAY)/flights_$(BAD_DAY).csv
	-$(BIN)/mlplatform ingest --problem $(PROBLEM) --start $(BAD_DAY) --end $(BAD_DAY)
	@echo "== the corrected export landed again: new content, ingested again =="
	$(BIN)/mlplatform land --problem $(PROBLEM) --start $(BAD_DAY) --end $(BAD_DAY)
	$(BIN)/mlplatform ingest --problem $(PROBLEM) --start $(BAD_DAY) --end $(BAD_DAY)
endif
	$(BIN)/mlplatform features --problem $(PROBLEM) --start $(DEMO_START) --end $(DEMO_END)
	$(BIN)/mlplatform train --problem $(PROBLEM)
	@# the service in the background, five real flights of the last day, then stop it
	$(BIN)/mlplatform serve --problem $(PROBLEM) --port $(DEMO_PORT) & pid=$$!; \
	  trap 'kill $$pid 2>/dev/null; wait $$pid' EXIT; \
	  $(BIN)/mlplatform predict --problem $(PROBLEM) --url http://127.0.0.1:$(DEMO_PORT) --wait 120 -n 5
	$(BIN)/mlplatform replay --problem $(PROBLEM) --start $(REPLAY_START) --end $(REPLAY_END) \
	  --trials $(REPLAY_TRIALS)
ifneq ($(SECOND),)
	@echo "== $(SECOND): a regression on hourly data, after the flights =="
	$(BIN)/mlplatform land --problem $(SECOND) --start $(SECOND_START) --end $(SECOND_END)
	$(BIN)/mlplatform ingest --problem $(SECOND) --start $(SECOND_START) --end $(SECOND_END) $(DEMO_INGEST)
	$(BIN)/mlplatform features --problem $(SECOND) --start $(SECOND_START) --end $(SECOND_END) \
	  $(DEMO_INGEST)
	$(BIN)/mlplatform train --problem $(SECOND)
	$(BIN)/mlplatform serve --problem $(SECOND) --port $(DEMO_PORT) & pid=$$!; \
	  trap 'kill $$pid 2>/dev/null; wait $$pid' EXIT; \
	  $(BIN)/mlplatform predict --problem $(SECOND) --url http://127.0.0.1:$(DEMO_PORT) --wait 120 -n 3
	$(BIN)/mlplatform replay --problem $(SECOND) --start $(SECOND_REPLAY_START) \
	  --end $(SECOND_REPLAY_END)
endif
	$(BIN)/mlplatform status
	@echo
	@echo "Next: 'make dev' opens the Dagster UI on http://127.0.0.1:3000 (asset groups by stage);"
	@echo "      '$(BIN)/mlplatform serve --problem $(PROBLEM)' serves predictions on :8000 (docs at /docs);"
	@echo "      'make mlflow' opens the MLflow UI on http://127.0.0.1:5000 (runs, registered model);"
	@echo "      'make monitor' opens the monitoring dashboards (Evidently) on http://127.0.0.1:8001;"
	@echo "      data/ holds the landing zone, warehouse, quarantine, Feast stores and reports;"
	@echo "      '$(BIN)/mlplatform feast --problem $(PROBLEM) -- feature-views list' runs the feast CLI;"
	@echo "      '$(BIN)/mlplatform status --json' is the same summary for scripts."

# The production profile on this machine (PostgreSQL and Redis running; docs/deploy.md).
demo-production: venv
	deploy/local.sh --problem $(PROBLEM) --start $(DEMO_START) --end $(DEMO_END)

# on every core (pytest-xdist): a file's tests stay together, in order, on one worker; the
# longest files go first (mlplatform_tests/conftest.py). Plain `.venv/bin/pytest` runs serially.
test: venv
	$(BIN)/pytest -n auto --dist loadfile --no-loadscope-reorder

# benchmarks in their quick mode, so a broken one shows in CI (figures: README, full runs)
bench-quick: venv
	$(BIN)/python bench/import_time.py
	$(BIN)/python bench/gates.py --quick

lint: venv $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pyright
	$(DG) check defs

# docs/spec-reference.md, every spec field, from the pydantic model (a test fails while stale)
spec-docs: venv
	$(BIN)/python -m mlplatform.spec_docs

# the instance folder; its dagster.yaml is a link to the repository's (mlplatform.settings)
$(DAGSTER_HOME)/dagster.yaml: | venv
	$(BIN)/python -c "from mlplatform.settings import ensure_dagster_home as e; e()"

# the UI and the daemon (`dg dev` loads the project from [tool.dg] in pyproject.toml)
dev: venv $(DAGSTER_HOME)/dagster.yaml
	$(DG) dev

mlflow: venv
	$(BIN)/mlplatform mlflow

# the monitoring dashboards (Evidently UI on 127.0.0.1:8001): one snapshot per day and kind
monitor: venv
	$(BIN)/mlplatform monitor --problem $(PROBLEM)

constraints: venv
	( sed -n '1,2p' constraints.txt; $(BIN)/pip freeze --exclude-editable ) > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf .dagster_home data .pytest_cache .ruff_cache
