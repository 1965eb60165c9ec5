# Two commands do all the set-up on a fresh machine (python3 + pip only):
#   make pipeline -> creates .venv if missing, runs the main job (quick preset, CPU): runs/quick/report.md
#   make test     -> creates .venv if missing, runs the fast test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: pipeline demo test test-slow docs bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

pipeline: $(STAMP)
	$(BIN)/bec-jax pipeline --preset quick --out runs/quick

demo: $(STAMP)
	$(BIN)/bec-jax demo --out runs/demo

# Two pytest workers (pytest-xdist): JAX compiles on one core, so two workers on two cores take about
# half the time of one. WORKERS=0 runs in this process (a debugger, -x, -s).
WORKERS ?= 2

test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(WORKERS)

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow -n $(WORKERS)

# The API reference (mkdocstrings) and guides, strict: a broken reference fails the build.
$(VENV)/.docs-installed: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[test,docs]'
	touch $@

docs: $(VENV)/.docs-installed
	$(BIN)/mkdocs build --strict --quiet

bench: $(STAMP)
	$(BIN)/python benchmarks/solver_throughput.py
	$(BIN)/python benchmarks/ground_state_methods.py
	$(BIN)/python benchmarks/generation_throughput.py
	$(BIN)/python benchmarks/dataset_time.py
	$(BIN)/python benchmarks/report.py --write

clean:
	rm -rf $(VENV) runs site .pytest_cache
