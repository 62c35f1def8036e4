# The one interface to esmpi: CI runs `make test`; users run `make train`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
ENV    ?= CartPole-v1
RANKS  ?= 2
ARGS   ?=
INSTALLED := $(VENV)/.installed

.PHONY: install lint test train bench clean

# Create the virtual environment and install esmpi with MPICH (so mpiexec comes with it).
$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[mpich,test]"
	touch $@

install: $(INSTALLED)

lint: $(INSTALLED)
	$(BIN)/ruff check esmpi tests bin
	$(BIN)/ruff format --check esmpi tests bin

test: lint
	$(BIN)/python -m pytest -q

# make train ENV=HalfCheetah-v5 RANKS=2 ARGS="--generations 200"
train: $(INSTALLED)
	$(BIN)/esmpi train --env $(ENV) --threads $(RANKS) $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
