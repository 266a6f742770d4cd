# sudo make lab    install what is needed, build the two-host lab and prove it
# sudo make test   install what is needed and run the whole test suite
# sudo make lab-down   remove the lab

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEBIAN_PACKAGES := openvswitch-switch iproute2 iputils-ping iputils-arping ethtool \
	tcpdump ruby python3 python3-venv

.PHONY: deps lab lab-down test lint

deps: $(BIN)/ovsnvgre

$(BIN)/ovsnvgre: pyproject.toml
	@if command -v apt-get >/dev/null; then \
		DEBIAN_FRONTEND=noninteractive apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
			$(DEBIAN_PACKAGES); \
	fi
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

lab: deps
	$(BIN)/ovsnvgre lab up
	$(BIN)/ovsnvgre lab check

lab-down: deps
	$(BIN)/ovsnvgre lab down

lint: deps
	$(BIN)/ruff check .

test: deps lint
	$(BIN)/python -m pytest -v
