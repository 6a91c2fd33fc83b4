# Two commands for a newcomer:  `make demo` (run) and `make test` (everything CI runs).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: install demo serve test lint generate bench wheel smoke image

$(BIN)/splitplane: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/splitplane

demo: install
	$(BIN)/splitplane demo

serve: install
	$(BIN)/splitplane serve --config-dir deploy/examples/local

generate: install
	$(BIN)/python proto/generate.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest -n 2 --dist loadgroup -q

bench: install
	$(BIN)/python benchmarks/translate.py

# The wheel users install (templates included); `make smoke` installs it on every Python 3.11–3.13
# this machine has and runs version, validate, bootstrap and demo from it.
wheel: install
	rm -f dist/splitplane-*.whl
	$(BIN)/pip wheel --quiet --no-deps --no-build-isolation --wheel-dir dist .

smoke: wheel
	.ci/smoke-wheel

# The container image deploy/control-plane.yaml runs, as an OCI archive (needs root, mmdebstrap
# and umoci). Load it into kind or push it: see the README.
IMAGE := splitplane:$(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)

image: wheel
	deploy/image/build dist/splitplane-*.whl dist/splitplane-image.tar $(IMAGE)
