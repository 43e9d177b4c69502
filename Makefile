# Two entry points (README quick start): `make demo` and `make test`. Both create .venv on first use.
# torch==2.13.0 is pinned here (not in pyproject) so pip takes the local CPU wheel instead of a CUDA build.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-all lint format clean gpu-check browser

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "torch==2.13.0" -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/pdasgd demo

test: $(STAMP)
	@$(MAKE) --no-print-directory browser || echo "no chromium: the playground's browser tests will be skipped"
	$(BIN)/python -m pytest

test-all: $(STAMP)
	$(BIN)/python -m pytest -m ""

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The playground's browser tests drive Debian's chromium through chromium-driver; installed when missing.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
		echo "installing Debian's chromium and chromium-driver (the playground's browser tests)"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq \
			chromium chromium-driver >/dev/null; }

# On a GPU machine, with its own python3 and no network (gpu/check.sh); GPU_OUT=dir for the results.
gpu-check:
	bash gpu/check.sh $(if $(GPU_OUT),--out $(GPU_OUT))

clean:
	rm -rf $(VENV) build *.egg-info
