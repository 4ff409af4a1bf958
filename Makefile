# The two commands of the contract: `make demo` and `make test`. Each does its own set-up:
# a .venv, the build tools, and the project installed editable (Cython core and protobuf
# modules built by setup.py). The install is redone when the build inputs change.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.lockfleet-installed
BUILD_INPUTS := pyproject.toml setup.py $(wildcard ext/lockfleet/*.pyx ext/lockfleet/*.pxd ext/lockfleet/*.pxi native/*.c native/*.h proto/lockfleet/v1/*.proto)

.PHONY: demo test bench bench-quick bench-scale install clean annotate cluster-demo

install: $(STAMP)

$(STAMP): $(BUILD_INPUTS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "setuptools>=70,<90" "cython>=3.0,<4" "grpcio-tools>=1.60,<2" "numpy>=1.26,<3" wheel
	$(BIN)/python -m pip install -q --no-build-isolation -e '.[test,bench]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/lockfleet demo

# A three-node NATS JetStream cluster on loopback with two gateways, two workers, an authority and a
# standby; a NATS node and the authority are killed mid-stream (lockfleet/cluster/demo.py).
cluster-demo: $(STAMP)
	@command -v nats-server >/dev/null 2>&1 || bash .ci/install-deps nats-server
	$(BIN)/lockfleet cluster-demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

# Benchmarks (not part of `make test`): every pytest-benchmark suite in benchmarks/, engine and
# baselines side by side, its JSON saved under benchmarks/results/ and RESULTS.md regenerated from it.
# `make bench` takes about 15 min on 2 shared cores; `make bench-quick` (small sizes) about 2 min.
BENCH_COMMIT = $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
BENCH_PYTEST = $(BIN)/python -m pytest benchmarks -q -p no:cacheprovider --timeout=1800 \
	--benchmark-enable --benchmark-columns=median,min,rounds --benchmark-group-by=group

bench: $(STAMP)
	@mkdir -p benchmarks/results
	BENCH_COMMAND="make bench" $(BENCH_PYTEST) --benchmark-json=benchmarks/results/$(BENCH_COMMIT).json; rc=$$?; \
	$(BIN)/python benchmarks/report.py benchmarks/results/$(BENCH_COMMIT).json -o benchmarks/RESULTS.md && exit $$rc

bench-quick: $(STAMP)
	@mkdir -p benchmarks/results
	BENCH_QUICK=1 BENCH_COMMAND="make bench-quick" $(BENCH_PYTEST) \
	  --benchmark-json=benchmarks/results/quick-$(BENCH_COMMIT).json; rc=$$?; \
	$(BIN)/python benchmarks/report.py benchmarks/results/quick-$(BENCH_COMMIT).json \
	  -o benchmarks/results/RESULTS-quick.md && exit $$rc

# The scale run of issue 16 (not part of `make test` nor `make bench`; about 10 min on 2 cores):
# a NATS cluster, two gateways, two workers and an authority taking 1,000 then 10,000 edge-mode
# hosts, and the engine's memory per host against the build before the host sketch; its JSON
# under benchmarks/results/, RESULTS.md regenerated with it from the `make bench` JSON it names.
bench-scale: $(STAMP)
	@command -v nats-server >/dev/null 2>&1 || bash .ci/install-deps nats-server
	@mkdir -p benchmarks/results
	$(BIN)/python benchmarks/bench_scale.py --out benchmarks/results/scale-$(BENCH_COMMIT).json
	$(BIN)/python benchmarks/report.py $$(sed -n 's/.*JSON `\(benchmarks\/results\/[^`]*\.json\)`.*/\1/p' benchmarks/RESULTS.md | head -1) \
	  --scale benchmarks/results/scale-$(BENCH_COMMIT).json -o benchmarks/RESULTS.md

# Cython's annotated HTML (yellow = Python interaction) for the core, next to the sources.
annotate: $(STAMP)
	@mkdir -p build/annotate
	$(BIN)/cython -3 -a -I ext/lockfleet ext/lockfleet/_core.pyx -o build/annotate/_core.c

clean:
	rm -rf build dist service/*.egg-info service/lockfleet/v1 service/lockfleet/*.so ext/lockfleet/*.c
