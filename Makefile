# Every target creates .venv and installs the package on first use, so a fresh
# machine with only Python 3.11 and make needs nothing else. `make demo` (and
# `make setup`) install the package without TensorFlow; `make test` adds the
# test tools and the `tfds` extra (TensorFlow, tensorflow-datasets, CLU) so the
# TFDS and TensorBoard-through-TensorFlow paths stay tested.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: setup demo test clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -e .
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[test,tfds]'
	touch $(TEST_STAMP)

demo: $(STAMP)
	$(PY) -m scalable_awt.demo

test: $(TEST_STAMP)
	$(PY) -m pytest -q -n 2 tests

clean:
	rm -rf $(VENV) runs .pytest_cache
