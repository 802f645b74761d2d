# classifier_training: every target installs what it needs first (idempotent; quick when done).
SHELL := /bin/bash
.ONESHELL:
.SHELLFLAGS := -eu -o pipefail -c
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed
ARGS ?=
PYTEST_ARGS ?=

.PHONY: install train test test-fast test-slow check-sync nbtest pytest docs lab bench clean-run-outputs

$(STAMP): settings.ini setup.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip check
	touch $(STAMP)

install: $(STAMP) ## create .venv and install the library (editable) with its dev extras

train: install ## train on the embedded sample data (pass Hydra overrides with ARGS="...")
	$(BIN)/classifier-train $(ARGS)

check-sync: install ## notebooks clean, library and README in sync with the notebooks
	$(PY) tools/check_sync.py

# One torch thread per test process: the tests run two processes at a time on 2 cores, and oversubscribed
# torch threads spin (measured: a tiny step took 5 s with 2 threads per process, 35 ms with 1).
nbtest: install ## run every notebook as a test (slow cells too when FLAGS=slow)
	OMP_NUM_THREADS=1 $(BIN)/nbdev_test --n_workers 2 --timing $(if $(FLAGS),--flags "$(FLAGS)",)

pytest: install ## pytest suite (fast tests; PYTEST_ARGS="-m slow" for the slow ones)
	OMP_NUM_THREADS=1 $(PY) tools/run_pytest.py $(PYTEST_ARGS)

test: check-sync nbtest pytest ## the whole default suite, as CI runs it

test-slow: install ## the slow notebook cells and slow pytest tests
	OMP_NUM_THREADS=1 $(BIN)/nbdev_test --n_workers 2 --timing --flags slow
	OMP_NUM_THREADS=1 $(PY) tools/run_pytest.py -m slow

docs: install ## offline docs site in _docs/ (nbdev + smalldocs; the hosted site uses Quarto)
	$(PY) tools/build_docs.py

lab: install ## JupyterLab on the project (prints the token URL)
	$(BIN)/jupyter lab --notebook-dir=nbs --no-browser --ip=127.0.0.1 $(if $(filter 0,$(shell id -u)),--allow-root,)

bench: install ## every benchmark; writes bench/RESULTS.md
	$(PY) bench/run_all.py
