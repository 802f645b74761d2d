# classifier_training: every target installs what it needs first (idempotent; quick when done).
SHELL := /bin/bash
.ONESHELL:
.SHELLFLAGS := -eu -o pipefail -c
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
# Exact versions of the tested set (settings.ini holds the ranges a plain `pip install` accepts).
PIP_INSTALL := $(PY) -m pip install --quiet -c constraints.txt
# Two stamps: `make train` installs what training needs, `make test` adds the dev extras once.
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
ARGS ?=
PYTEST_ARGS ?=
CHROMIUM_FIX := apt-get install -y chromium

.PHONY: install install-dev train test test-fast test-slow check-sync nbtest pytest docs outputs lab bench \
	browser clean-run-outputs bench-full

$(STAMP): settings.ini setup.py constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PIP_INSTALL) -e .
	$(PY) -m pip check
	touch $(STAMP)

$(DEV_STAMP): $(STAMP)
	$(PIP_INSTALL) -e '.[dev]'
	$(PY) -m pip check
	touch $(DEV_STAMP)

install: $(STAMP) ## create .venv and install the library (editable) with what training needs

install-dev: $(DEV_STAMP) ## the same plus the dev extras (nbdev, JupyterLab, pytest, Playwright)

train: install ## train on the embedded sample data (pass Hydra overrides with ARGS="...")
	$(BIN)/classifier-train $(ARGS)

check-sync: install-dev ## notebooks clean, library and README in sync with the notebooks
	$(PY) tools/check_sync.py

# One torch thread per test process: the tests run two processes at a time on 2 cores, and oversubscribed
# torch threads spin (measured: a tiny step took 5 s with 2 threads per process, 35 ms with 1).
nbtest: install-dev ## run every notebook as a test (slow cells too when FLAGS=slow)
	OMP_NUM_THREADS=1 $(BIN)/nbdev_test --n_workers 2 --timing $(if $(FLAGS),--flags "$(FLAGS)",)

pytest: install-dev ## pytest suite (fast tests; PYTEST_ARGS="-m slow" for the slow ones)
	OMP_NUM_THREADS=1 $(PY) tools/run_pytest.py $(PYTEST_ARGS)

# The docs-site tests open every page in Chromium: install it when root with apt-get, else stop with
# the command; CLASSIFIER_TRAINING_SKIP_BROWSER=1 skips those tests on purpose.
browser: ## Chromium for the docs-site browser tests
	@if [ "$${CLASSIFIER_TRAINING_SKIP_BROWSER:-}" = 1 ]; then
	  exit 0
	elif command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then
	  exit 0
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
	  echo "installing Chromium for the docs-site tests ($(CHROMIUM_FIX))"
	  export DEBIAN_FRONTEND=noninteractive
	  apt-get update -qq && apt-get install -y -qq chromium >/dev/null
	else
	  echo "Chromium is missing: the docs-site tests open every page in it. Install it with:" >&2
	  echo "    sudo $(CHROMIUM_FIX)" >&2
	  echo "(or run CLASSIFIER_TRAINING_SKIP_BROWSER=1 make test to skip those tests on purpose)" >&2
	  exit 1
	fi

test: browser check-sync nbtest pytest ## the whole default suite, as CI runs it

test-slow: install-dev ## the slow notebook cells and slow pytest tests
	OMP_NUM_THREADS=1 $(BIN)/nbdev_test --n_workers 2 --timing --flags slow
	OMP_NUM_THREADS=1 $(PY) tools/run_pytest.py -m slow

docs: install-dev ## offline docs site in _docs/ (nbdev + smalldocs; the hosted site uses Quarto)
	$(PY) tools/build_docs.py

outputs: install-dev ## execute every notebook in place and keep its small outputs (commit them)
	OMP_NUM_THREADS=1 $(PY) tools/build_docs.py --execute-in-place

lab: install-dev ## JupyterLab on the project (prints the token URL)
	$(BIN)/jupyter lab --notebook-dir=nbs --no-browser --ip=127.0.0.1 $(if $(filter 0,$(shell id -u)),--allow-root,)

bench: install-dev ## the benchmarks of bench/ (about 30 minutes on 2 cores); writes bench/RESULTS.md
	$(PY) bench/run_all.py

bench-full: install-dev ## every benchmark in its long form (hours); writes bench/RESULTS.md
	$(PY) bench/run_all.py --full
