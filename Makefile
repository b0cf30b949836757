# Thin targets; everything installs into .venv from this repository's own files.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo serve test lint bench bench-quick clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,content]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/reelrank demo

serve: $(STAMP)
	$(BIN)/reelrank serve

# The browser tests drive Debian's chromium; install it where we may (root), else they skip.
test: $(STAMP)
	@command -v chromium >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
		echo "chromium could not be installed: the browser tests will skip" >&2
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

# The benchmark suite: every speed figure, benchmarks/results/SUMMARY.md and plots/*.png
# (about 1.5-2 hours on 2 cores; bench-quick is a smoke run of a few minutes). The plots
# need the `bench` extra, installed once.
BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test,content,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python benchmarks/suite.py

bench-quick: $(BENCH_STAMP)
	$(BIN)/python benchmarks/suite.py --quick

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
