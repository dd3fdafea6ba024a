# One entry for people and CI. `make test` builds .venv when pyproject.toml changes.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# torch/torchvision are installed first and pinned: 2.14.1/0.29.1 is the CUDA build
# our machines serve from local disk (it also runs on CPU-only machines).
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: setup test test-slow lint toy clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_PINS)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

toy: $(STAMP)
	$(BIN)/python -m nflowjs.toy2d --out out/toy2d

clean:
	rm -rf $(VENV) out .pytest_cache
