# ledgerflow — the two commands: `make demo` and `make test`.
# `make setup` is idempotent: it installs only what is missing, then builds.

SHELL := /bin/bash
CARGO ?= cargo
PYTHON ?= python3
export PATH := $(HOME)/.cargo/bin:$(PATH)

# `make chaos` is not part of `make test` (its short profile is: tests/tests/chaos_short.rs).
.PHONY: chaos setup-connect setup setup-system setup-tools setup-kafka setup-apicurio setup-python setup-postgres build test test-rust fuzz-smoke lint demo bench proof-erp clean

setup: setup-system setup-tools setup-kafka setup-apicurio setup-python setup-postgres build

setup-system:
	@scripts/ensure-system-libs.sh

setup-tools:
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install the Rust toolchain (rustup)"; exit 1; }
	@$(CARGO) --version

# Apache Kafka 4.4.0 jars from Maven Central into .local/kafka/lib/ (skipped when present);
# scripts/kafka starts clusters from them.
setup-kafka:
	@scripts/setup-kafka.sh

# Apicurio Registry 3.3.3, the built application from Maven Central (~160 MB, ~15 s; it needs a
# Java 21+, found under /usr/lib/jvm or given as APICURIO_JAVA) into .local/apicurio/, for the
# interoperability test with a registry this project did not write. Skipped when present.
setup-apicurio:
	@scripts/setup-apicurio.sh

# Kafka Connect 4.4.0, the Debezium JDBC sink and Apicurio's converter (the benchmark's peer)
# from Maven Central into .local/connect/ (skipped when present; not part of `make setup`).
setup-connect:
	@scripts/setup-connect.sh

setup-python:
	@if $(PYTHON) -c "import confluent_kafka.schema_registry.avro" 2>/dev/null; then \
		echo "confluent-kafka present"; \
	else \
		echo "installing confluent-kafka[avro,schemaregistry] (interop tests)"; \
		$(PYTHON) -m pip install --quiet 'confluent-kafka[avro,schemaregistry]>=2,<3'; \
	fi

setup-postgres:
	@scripts/ensure-postgres.sh

build:
	$(CARGO) build --workspace --all-targets

test: setup lint check-observability test-rust fuzz-smoke
	@scripts/test-summary.sh target/test-rust.log

# The log feeds the closing summary line; pipefail keeps cargo's exit status.
test-rust:
	@mkdir -p target
	set -o pipefail; $(CARGO) test --workspace --no-fail-fast 2>&1 | tee target/test-rust.log

fuzz-smoke:
	@if [ -x fuzz/run.sh ]; then fuzz/run.sh 20; else echo "fuzz target not present"; fi

# Prometheus config, alert rules and their unit tests (promtool: Debian package `prometheus`,
# installed by `make setup`), then static checks of deploy/ (YAML, dashboard, manifests).
.PHONY: check-observability
check-observability:
	promtool check rules deploy/prometheus/alerts.yml
	promtool check config deploy/prometheus/prometheus.yml
	promtool test rules deploy/prometheus/alerts.test.yml
	@$(PYTHON) -c 'import yaml' 2>/dev/null || $(PYTHON) -m pip install --quiet pyyaml
	$(PYTHON) deploy/check.py

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

demo: setup
	@scripts/demo.sh

# W1 on this machine: broker, Postgres and ledgerflow together; writes bench/results/<date>.md
# and .json (BENCH_EVENTS=200000 make bench for a shorter run), then the criterion benches.
bench: setup-system setup-tools setup-kafka setup-connect setup-apicurio setup-postgres
	@command -v perf >/dev/null || echo "perf not found: the report will have no profile (apt-get install linux-perf)"
	$(CARGO) build --release -p ledgerflow-cli -p ledgerflow-bench
	target/release/ledgerflow-bench
	$(CARGO) bench -p ledgerflow-bench

# The ERP delivery proof at full scale: 50,000 events over 8 tenants on the four ERPs of the
# simulator at 10% faults, once straight and once with three SIGKILLs, on release binaries
# (tests/tests/erp_delivery.rs; `make test` runs the same tests with 1,200 events).
proof-erp: setup-system setup-tools setup-kafka setup-postgres
	$(CARGO) build --release -p ledgerflow-cli -p ledgerflow-erp-sim
	LEDGERFLOW_ERP_PROOF=full LEDGERFLOW_BIN=$(CURDIR)/target/release/ledgerflow \
		LEDGERFLOW_ERP_SIM_BIN=$(CURDIR)/target/release/ledgerflow-erp-sim \
		$(CARGO) test -p ledgerflow-e2e --test erp_delivery -- --nocapture

# The chaos suite, full profile, on the release binary: seeded fault scenarios on a 3-broker
# cluster; writes chaos/results/<date>.md. CHAOS_SEED=N replays a run's schedule,
# CHAOS_SCENARIO=name runs one scenario (malformed, registry, kills, rebalance-classic,
# rebalance-kip848, brokers, postgres, erp, combined). It restarts and pauses the local Postgres.
CHAOS_SEED ?=
CHAOS_SCENARIO ?=
chaos: setup-system setup-tools setup-kafka setup-postgres
	$(CARGO) build --release -p ledgerflow-cli -p ledgerflow-erp-sim -p ledgerflow-e2e --bins
	LEDGERFLOW_BIN=$(CURDIR)/target/release/ledgerflow target/release/ledgerflow-chaos --profile full \
		$(if $(CHAOS_SEED),--seed $(CHAOS_SEED)) $(if $(CHAOS_SCENARIO),--scenario $(CHAOS_SCENARIO))

clean:
	$(CARGO) clean
