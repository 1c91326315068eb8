# One-command set-up: every target installs what it needs first.
#   make demo   - train the tiny preset on generated data (CPU is fine)
#   make test   - run the test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install ffmpeg test coverage demo lint bench compare gpu-wheels gpu-check gpu-check-smoke clean-venv

install: $(STAMP) ffmpeg

# Reinstalled when the dependency pins or the package metadata change.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

ffmpeg:
	@bash scripts/ensure_ffmpeg.sh

test: install
	$(PY) -m pytest -q

# Line coverage of waveunet/, subprocesses included ([tool.coverage.run] in pyproject.toml).
coverage: install
	rm -rf .coverage-data && mkdir -p .coverage-data
	COVERAGE_FILE=$(abspath .coverage-data/coverage) $(PY) -m coverage run -m pytest -q
	cd .coverage-data && COVERAGE_FILE=coverage $(PY) -m coverage combine -q \
		&& COVERAGE_FILE=coverage $(PY) -m coverage report --rcfile=../pyproject.toml

demo: install
	$(VENV)/bin/waveunet train experiment=demo

lint: install
	$(VENV)/bin/ruff check waveunet scripts tests
	$(VENV)/bin/hadolint Dockerfile

bench: install
	$(PY) scripts/bench.py

# On a lent GPU machine (no venv there: its own python3 with torch, plus the carried wheels).
gpu-wheels:
	bash scripts/gpu_wheels.sh

gpu-check:
	bash scripts/gpu_check.sh

# The same steps on this CPU with a tiny model: try the script before spending GPU time.
gpu-check-smoke: install
	PYTHON=$(abspath $(PY)) bash scripts/gpu_check.sh --smoke --out gpu-check-out

compare: install
	$(VENV)/bin/waveunet compare experiment=compare_quick

clean-venv:
	rm -rf $(VENV)
