# FusionBench: `make run` runs the main job, `make test` the tests; both set up what they need.
SHELL := /bin/bash
VENV := .venv
STAMP := $(VENV)/.fusionbench-setup
SETUP_INPUTS := scripts/setup.sh scripts/install-offline-data.sh $(wildcard */pyproject.toml plugins/*/pyproject.toml examples/*/pyproject.toml)

.PHONY: setup run test test-fast bench clean

setup: $(STAMP)

$(STAMP): $(SETUP_INPUTS)
	bash scripts/setup.sh
	touch $(STAMP)

## The main job: task arithmetic on the offline mini-vision suite (built on first use).
run: setup
	$(VENV)/bin/fb run

## The whole test suite (what CI runs): builds the quick mini suites first (cached), then every test.
test: setup
	$(VENV)/bin/fb suites build mini-vision --quick
	$(VENV)/bin/fb suites build mini-text --quick
	$(VENV)/bin/python -m pytest -q

## One package's tests, e.g. `make test-fast pkg=fusionbench_core`.
test-fast: setup
	$(VENV)/bin/python -m pytest -q $(pkg)

bench: setup
	$(VENV)/bin/python benchmarks/merge_bench.py

clean:
	rm -rf $(VENV) fb-runs
