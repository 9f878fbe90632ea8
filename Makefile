# Quick start: `make demo` (set up and run the main job), `make test` (the whole suite).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo train-demo test lint data bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

data: $(STAMP)
	$(PY) -m spmi.data.fetch fmnist

demo: data
	$(PY) tuning/search.py --dataset fmnist --preset quick

train-demo: data
	$(PY) -m spmi.train --dataset fmnist --method spmi --labelled 4000 --partial-rate 0.3 \
		--epochs 20 --warmup 10 --seed 123 --out runs/fmnist-spmi

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check spmi tuning tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/epoch_time.py

clean:
	rm -rf runs results hpo_results
