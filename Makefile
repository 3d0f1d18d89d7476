# The README's two commands: `make demo` (the main job) and `make test` (the tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test lint browser clean

$(BIN)/uv:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip uv
	@# Python < 3.12 seeds setuptools into a venv; drop it, so that (as in uv's and 3.12+ venvs)
	@# the pkg_resources tensorflow-hub imports comes only from the declared setuptools<81.
	$(BIN)/pip uninstall --quiet --yes setuptools

install: $(BIN)/uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[dev]'

# Debian's Chromium drives the Prefect UI in the e2e tests (playwright's own browser
# download is not reachable offline).
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

demo: install
	$(BIN)/posterflow demo

test: install browser
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check flows tasks storage tests benchmarks

clean:
	rm -rf $(VENV) posterflow-data .pytest_cache
