# gpbayes: the two commands are `make run` and `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
export XLA_FLAGS ?= --xla_cpu_multi_thread_eigen=false
export OPENBLAS_NUM_THREADS ?= 1
# pytest processes (pytest-xdist): each runs XLA on one thread, so one per core
TEST_WORKERS ?= 2

.PHONY: install run test test-fast test-calibration lint bench bench-report clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

run: install
	$(BIN)/gpbayes solve models/poisson1d-sin100.toml --out runs/poisson1d-sin100

test: install
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS)

test-fast: install
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) -m "not slow and not calibration"

test-calibration: install
	$(BIN)/python -m pytest -q -m calibration

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/python benchmarks/step_time.py

bench-report: install  # the accuracy-and-time tables of benchmarks/README.md (about 10 minutes)
	$(BIN)/python benchmarks/report.py

clean:
	rm -rf runs .pytest_cache
