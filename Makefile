# `make demo` and `make test` do all set-up on a fresh machine: they create .venv and install.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := demo
DEMO_BUNDLE := bundles/credit-score-1.0.0.bundle

.PHONY: demo test fuzz lint bench clean device-test broker fleet-sim

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[build,dev,fleet]'
	touch $(STAMP)

demo: $(STAMP)
	@echo "--- training an example credit-score model (XGBoost) into $(DEMO)/"
	rm -rf $(DEMO)
	$(BIN)/python -m edgebundle.builder.example --out $(DEMO)
	@echo "--- creating a signing key pair"
	$(BIN)/bundle keygen --out $(DEMO)/keys
	@echo "--- building the signed bundle (float and int8 converted, each checked against XGBoost, the faster one at one row shipped)"
	$(BIN)/bundle build $(DEMO)/model.json --name credit-score --version 1.0.0 \
		--key $(DEMO)/keys/signing.key --data $(DEMO)/data.csv --force
	@echo "--- verifying the bundle as a device would"
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
	@echo "--- installing into a device store (verify, selftest, activate)"
	$(BIN)/bundle-runtime init --store $(DEMO)/store --trust $(DEMO)/keys/signing.pub
	$(BIN)/bundle-runtime install $(DEMO_BUNDLE) --store $(DEMO)/store
	@echo "--- serving the store over HTTP and scoring the example rows"
	$(BIN)/python -m edgebundle.builder.example --serve-demo $(DEMO)

# gpg signs the throwaway Debian mirror the armv7l kit's tests verify with gpgv.
DEBIAN_TOOLS := command -v gpg >/dev/null && command -v gpgv >/dev/null && \
	[ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || \
	(apt-get update -qq && apt-get install -y -qq gpg gpgv debian-archive-keyring)

# The fleet tests run a real MQTT broker (Debian's mosquitto) on 127.0.0.1.
broker:
	command -v mosquitto >/dev/null || test -x /usr/sbin/mosquitto || \
		(apt-get update -qq && apt-get install -y -qq mosquitto)

# curl for the TLS and operator tests, systemd-analyze to verify the device kit's unit.
test: $(STAMP) broker
	command -v curl >/dev/null || (apt-get update -qq && apt-get install -y -qq curl)
	command -v systemd-analyze >/dev/null || (apt-get update -qq && apt-get install -y -qq systemd)
	$(DEBIAN_TOOLS)
	$(BIN)/python -m pytest -q -n auto

# The parser fuzz tests with many more examples than `make test` runs (tens of minutes);
# failing examples are kept in .cache/hypothesis and tried first next time.
FUZZ_TESTS := tests/runtime/test_fuzz_http.py tests/runtime/test_fuzz_decoders.py
fuzz: $(STAMP)
	EDGEBUNDLE_FUZZ=fuzz $(BIN)/python -m pytest -q -n auto $(FUZZ_TESTS)

bench: $(STAMP) broker
	$(BIN)/python -m pip install -q -e '.[build,dev,bench]'
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	command -v openssl >/dev/null || (apt-get update -qq && apt-get install -y -qq openssl)
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

# The runtime on emulated aarch64 and armv7l (qemu-user, no binfmt_misc needed): installs the
# device kits offline and compares every prediction with x86's (about 10 minutes; downloads
# ~120 MB the first time, among them Debian trixie's armhf packages, checked with gpgv).
device-test: $(STAMP)
	$(DEBIAN_TOOLS)
	$(BIN)/python -m pytest -m device tests/device -q

clean:
	rm -rf $(VENV) $(DEMO) bundles/*.bundle build .cache
