# `make demo` and `make test` do all set-up on a fresh machine: they create .venv and install.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := demo
DEMO_BUNDLE := bundles/credit-score-1.0.0.bundle

.PHONY: demo test lint bench clean device-test broker fleet-sim

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[build,dev,fleet]'
	touch $(STAMP)

demo: $(STAMP)
	rm -rf $(DEMO)
	$(BIN)/python -m edgebundle.builder.example --out $(DEMO)
	$(BIN)/bundle keygen --out $(DEMO)/keys
	$(BIN)/bundle build $(DEMO)/model.json --name credit-score --version 1.0.0 \
		--key $(DEMO)/keys/signing.key --data $(DEMO)/data.csv --force
	$(BIN)/bundle verify $(DEMO_BUNDLE) --trust $(DEMO)/keys/signing.pub
	@echo "--- scoring JSON lines through bundle-runtime (stdin → stdout)"
	$(BIN)/bundle-runtime score --bundle $(DEMO_BUNDLE) --trust $(DEMO)/keys/signing.pub \
		< $(DEMO)/rows.jsonl
	@echo "--- scoring CSV rows"
	head -4 $(DEMO)/data.csv | $(BIN)/bundle-runtime score --bundle $(DEMO_BUNDLE) \
		--trust $(DEMO)/keys/signing.pub --format csv
	@echo "--- drift: later applicants scored with a drift report, read on the workstation"
	$(BIN)/bundle-runtime score --bundle $(DEMO_BUNDLE) --trust $(DEMO)/keys/signing.pub \
		--format csv --drift-report $(DEMO)/drift.json < $(DEMO)/live.csv > /dev/null
	$(BIN)/bundle drift $(DEMO)/drift.json --html $(DEMO)/drift.html
	@echo "--- installing into a device store and scoring over HTTP"
	$(BIN)/bundle-runtime init --store $(DEMO)/store --trust $(DEMO)/keys/signing.pub
	$(BIN)/bundle-runtime install $(DEMO_BUNDLE) --store $(DEMO)/store
	$(BIN)/python -m edgebundle.builder.example --serve-demo $(DEMO)

# The fleet tests run a real MQTT broker (Debian's mosquitto) on 127.0.0.1.
broker:
	command -v mosquitto >/dev/null || test -x /usr/sbin/mosquitto || \
		(apt-get update -qq && apt-get install -y -qq mosquitto)

test: $(STAMP) broker
	$(BIN)/python -m pytest -q -n auto

bench: $(STAMP) broker
	$(BIN)/python -m pip install -q -e '.[build,dev,bench]'
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python -m bench $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	command -v shellcheck >/dev/null || (apt-get update -qq && apt-get install -y -qq shellcheck)
	shellcheck builder/kit/install.sh

# N simulated devices (real update client and MQTT session each) against a static channel and
# Mosquitto: convergence with notice vs poll only, a broker restart, 20% offline (a few minutes).
fleet-sim: $(STAMP) broker
	$(BIN)/python -m bench.fleetsim $(SIM_ARGS)

# The runtime on emulated aarch64 (qemu-user, no binfmt_misc needed): installs the device kit
# offline and compares every prediction with x86's (minutes; downloads ~50 MB the first time).
device-test: $(STAMP)
	$(BIN)/python -m pytest -m device tests/device -q

clean:
	rm -rf $(VENV) $(DEMO) bundles/*.bundle build .cache
