# GeniusRec: `make quickstart` (set up + MovieLens-1M end to end) and `make test` (set up + tests).
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0

.PHONY: install test lint quickstart quickstart-hstu data clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==$(TORCH_VERSION)   # first, so that no CUDA build is pulled in
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q tests

lint: install
	$(VENV)/bin/ruff check .

data/ml-1m/stats.json: | install
	$(PY) -m data_scripts.movielens --variant ml-1m --out data/ml-1m

data: data/ml-1m/stats.json

quickstart: install
	$(PY) -m train.pipeline --work_dir runs/quickstart

quickstart-hstu: install data
	$(PY) -m train.pretrain --config train/configs/quickstart.json --dataset data/ml-1m --output_dir runs/quickstart-hstu --show_recommendations 3

clean:
	rm -rf $(VENV) .ci-venv runs .pytest_cache
