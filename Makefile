# Every target creates .venv (CPU torch) on first use and installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test models bench-acasxu clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU build of torch first: a plain 'torch' requirement would pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0 || $(BIN)/pip install --quiet torch --index-url https://download.pytorch.org/whl/cpu
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python tools/demo.py

# A test that hangs fails after 15 minutes with every thread's stack printed, instead of stalling the
# run. Plain load distribution: with --dist loadgroup/loadscope, pytest-xdist (3.8) waits forever
# after replacing a crashed worker; at the default verbosity it names a worker that went down.
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --timeout 900 --timeout-method thread tests

models: $(STAMP)
	$(BIN)/python tools/make_models.py

bench-acasxu: $(STAMP)
	$(BIN)/python tools/bench_vnncomp.py --only acasxu --timeout 60

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
