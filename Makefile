# The newcomer's whole set-up: `make run` to see it work, `make test` to pass the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# `make run PORT=9151 ARGS='--stuck-threshold 10'`: the demo's port (empty: its default) and
# any other demo options. Plain `=`, not `?=`: a PORT in the shell's environment is not ours.
PORT =
ARGS =

.PHONY: run test lint bench clean

run: $(STAMP)
	$(PY) -m lock_monitor demo $(if $(PORT),--port $(PORT)) $(ARGS)

test: $(STAMP) lint
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

# Not part of `make test`: about ten minutes against 1,000,000 keys (see docs/performance.md). All
# three run even when one misses a target; the exit status says whether any did.
bench: $(STAMP)
	status=0; \
	$(PY) benchmarks/bench.py || status=1; \
	$(PY) benchmarks/events_bench.py || status=1; \
	$(PY) benchmarks/liveset_bench.py || status=1; \
	exit $$status

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,demo]'
	touch $@

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
