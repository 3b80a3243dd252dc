# Set-up and everyday commands. `make install` creates .venv/ in the repo root.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# A CPU build of torch; installed first so nothing pulls a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: install test test-all test-lowest demo demo-seeds bench lint gpu-check

install: $(BIN)/tulu

$(BIN)/tulu: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_SPEC)
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(BIN)/tulu

# The default test run: fast tests only (slow end-to-end runs and benchmarks excluded).
test: install
	$(BIN)/pytest -q

# Everything but benchmarks, including the slow end-to-end runs.
test-all: install
	$(BIN)/pytest -q -m "not bench"

# The default test run on the oldest versions pyproject.toml admits: every `>=` floor of the package and
# its dev extra installed exactly (tests/lowest_requirements.py), in .venv-lowest/.
LOWEST := .venv-lowest
test-lowest:
	$(PYTHON) -m venv $(LOWEST)
	$(LOWEST)/bin/pip install --quiet --upgrade pip
	$(LOWEST)/bin/pip install --quiet $(TORCH_SPEC)
	$(PYTHON) tests/lowest_requirements.py > $(LOWEST)/constraints.txt
	$(LOWEST)/bin/pip install --quiet -e ".[dev]" -c $(LOWEST)/constraints.txt
	$(LOWEST)/bin/pytest -q

# The tiny Tulu 3 pipeline on CPU, end to end (`make demo SEED=N` for another seed).
demo: install
	$(BIN)/tulu recipe tiny $(if $(SEED),--seed $(SEED))

# The tiny pipeline for seeds 1, 2 and 3, then each stage's mean and spread over the seeds.
demo-seeds: install
	$(BIN)/tulu recipe tiny_seeds 1 2 3

# On one CUDA GPU (not part of the tests): tiny SFT, DPO and RLVR for a few steps each under one-GPU
# ZeRO-3 in bf16, PASS/FAIL per stage. Installs a CUDA build of torch when .venv/ does not exist yet.
GPU_TORCH_SPEC ?= torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128
gpu-check:
	@test -x $(BIN)/tulu || $(MAKE) install TORCH_SPEC="$(GPU_TORCH_SPEC)"
	$(BIN)/python -m tulu_cli.gpu_check

bench: install
	$(BIN)/pytest -q -s -m bench tests/benchmarks

lint: install
	$(BIN)/ruff check tulu_cli tests
