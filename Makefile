# raftdb: the two commands are `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The docs extra (make docs), installed on top of the test extra; make test builds the site.
DOCS_STAMP := $(VENV)/.installed-docs
# Material prints a banner about MkDocs 2.0 on every run unless told not to.
MKDOCS := NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs

.PHONY: test run lint layers typecheck unit bench-core bench bench-pair docs docs-serve clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

## test: lint, type-check, check the layer contract, build the docs site (--strict) and run
## the whole test suite (CI runs this).
test: $(DOCS_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-logo
	$(MKDOCS) build --strict --site-dir site
	$(BIN)/pytest
	$(BIN)/python -m tests.mutation --seeds 100

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-logo

## layers: the import-linter contract of pyproject.toml (docs/architecture.md).
layers: $(STAMP)
	$(BIN)/lint-imports --no-logo

# The docs hooks (docs/hooks/) import mkdocs: type-check them with it installed.
typecheck: $(DOCS_STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest

## docs: the documentation site (mkdocs.yml) into site/, with --strict: a broken link, a
## missing anchor or a page left out of the navigation fails. The reference pages are
## generated from the code as it builds (docs/hooks/). Installs the docs extra.
$(DOCS_STAMP): pyproject.toml $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,docs]'
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	$(MKDOCS) build --strict --site-dir site

## docs-serve: the site on http://127.0.0.1:8000/, rebuilt when docs/ or the code changes.
docs-serve: $(DOCS_STAMP)
	$(MKDOCS) serve -a 127.0.0.1:8000

## bench-core: pytest-benchmark suites (components, no servers).
bench-core: $(STAMP)
	$(BIN)/pytest benchmarks/ --benchmark-only -p no:cacheprovider

## bench: the cluster benchmark (issues 6 and 15): raftdb, etcd, PySyncObj and the trivial apps
## side by side under wrk, raftdb and etcd also as one-member clusters, with the servers' CPU
## per request; writes docs/benchmarks.md's section (issue 15's targets) and
## docs/benchmarks/cluster.png.
## Installs the bench extra, and wrk and etcd-server with apt-get when missing.
## Options: make bench BENCH_ARGS='--repeats 1 --duration 5' (python -m benchmarks.cluster run -h).
BENCH_STAMP := $(VENV)/.installed-bench
BENCH_ARGS ?=

$(BENCH_STAMP): pyproject.toml $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks.cluster run $(BENCH_ARGS)

## bench-pair: revisions A and B of raftdb, their clusters at the same time under the same
## load, B/A per round (requests/s, CPU per answer, p99), median and range over rounds: how
## each lever in docs/benchmarks.md was measured. make bench-pair A=main B=HEAD; options:
## PAIR_ARGS='--rounds 6 --ops put,get --connections 1,16,64' (python -m benchmarks.cluster pair -h).
A ?= main
B ?= HEAD
PAIR_ARGS ?=

bench-pair: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks.cluster pair --a $(A) --b $(B) $(PAIR_ARGS)

## chaos: the long fault-injection runs (tests/chaos, marker slow): every nemesis
## scenario for CHAOS_SECONDS with CHAOS_SEEDS seeds, the kill -9 runs (CHAOS_KILLS kills
## each), the fuzzers with more examples, BITROT_TRIALS bit-rot trials per storage and
## state machine pair (tests/bitrot), and the power cuts (tests/powerloss: POWERLOSS_CUTS
## cuts for each pair of storage and state machine plugins). Each run prints one summary
## line; they are also appended to CHAOS_SUMMARY. CI (make test) runs the short set.
## docs/reliability.md.
CHAOS_SECONDS ?= 120
CHAOS_SEEDS ?= 5
CHAOS_KILLS ?= 100
POWERLOSS_CUTS ?= 60
CHAOS_SUMMARY ?= $(CURDIR)/$(VENV)/chaos-summary.txt
# The bit-rot trials (tests/bitrot): offline trials per storage/state machine pair, with a
# fresh seed (BITROT_SEED=S replays one), and damaged directories started as real nodes.
BITROT_TRIALS ?= 2000
BITROT_STARTS ?= 6
.PHONY: chaos
chaos: $(STAMP)
	FUZZ_EXAMPLES=20000 SCHEMATHESIS_EXAMPLES=300 \
	$(BIN)/pytest tests/chaos/test_fuzz.py tests/chaos/test_api_schema.py -p no:cacheprovider
	CHAOS_SECONDS=$(CHAOS_SECONDS) CHAOS_SEEDS=$(CHAOS_SEEDS) CHAOS_KILLS=$(CHAOS_KILLS) \
	CHAOS_SUMMARY=$(CHAOS_SUMMARY) $(BIN)/pytest tests/chaos -m slow -p no:cacheprovider
	BITROT_TRIALS=$(BITROT_TRIALS) BITROT_STARTS=$(BITROT_STARTS) CHAOS_SUMMARY=$(CHAOS_SUMMARY) \
	$(BIN)/pytest tests/bitrot -m slow -p no:cacheprovider
	POWERLOSS_CUTS=$(POWERLOSS_CUTS) CHAOS_SUMMARY=$(CHAOS_SUMMARY) \
	$(BIN)/pytest tests/powerloss -m slow -p no:cacheprovider
	$(BIN)/python -m tests.mutation --seeds 2000

## soak: hours of mixed, rate-limited load with faults every few seconds on a 3-node cluster
## (tests/soak, not in CI): kill, stop, pause, partition, slow links, membership, power cuts
## (every node's data on a power-loss FUSE filesystem, so FUSE is needed), sampling every node's
## RSS, fds, threads and event-loop lag; fails on a growth trend, a leak or a failed end check.
## Writes build/soak/<run>/ (samples.csv, daemons.csv, summary.json, rss.png).
## docs/reliability.md#soak. Installs the soak extra.
## Options: SOAK_MINUTES (120), SOAK_SAMPLE_SECONDS (60), SOAK_RATE (ops/s, 30), SOAK_SEED (1),
## SOAK_WARMUP_SECONDS (left out of the trend fits, 3600: at 30 ops/s the session table, kept
## 100 000 entries, is full after about 50 minutes; empty: a fifth of the run, at most 300).
SOAK_STAMP := $(VENV)/.installed-soak
SOAK_MINUTES ?= 120
SOAK_SAMPLE_SECONDS ?= 60
SOAK_RATE ?= 30
SOAK_SEED ?= 1
SOAK_WARMUP_SECONDS ?= 3600
.PHONY: soak

$(SOAK_STAMP): pyproject.toml $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,soak]'
	touch $(SOAK_STAMP)

soak: $(SOAK_STAMP)
	$(BIN)/python -m tests.soak --minutes $(SOAK_MINUTES) --sample-seconds $(SOAK_SAMPLE_SECONDS) \
	  --rate $(SOAK_RATE) --seed $(SOAK_SEED) --out build/soak \
	  $(if $(SOAK_WARMUP_SECONDS),--warmup-seconds $(SOAK_WARMUP_SECONDS))

## mutants: the mutation check (tests/mutation, docs/testing.md): each hand-written mutation
## of the Raft core, applied alone, must make the simulation fail. make test runs it with 100
## seeds, make chaos with 2000. Options: make mutants MUTANT_ARGS='--only figure8 --seeds 1000'.
MUTANT_ARGS ?=
.PHONY: mutants
mutants: $(STAMP)
	$(BIN)/python -m tests.mutation $(MUTANT_ARGS)

## run: the local 3-node cluster of the Procfile (honcho) in the foreground; Ctrl-C stops it.
run: $(STAMP)
	@test -x $(BIN)/honcho || $(BIN)/python -m pip install --quiet -e '.[dev]'
	@echo "raftdb: 3 nodes, client API on 127.0.0.1:12380, :22380, :32380 (data in raftdb-1..3/)."
	@echo "Try, from another terminal:"
	@echo "  curl -L http://127.0.0.1:12380/my-key -XPUT -d bar"
	@echo "  curl -L http://127.0.0.1:32380/my-key"
	@echo "  curl -L http://127.0.0.1:12380/v1/status"
	@echo "  curl -L http://127.0.0.1:12380/4 -XPOST -d http://127.0.0.1:42379"
	@echo "  $(BIN)/raftdb serve --id 4 --cluster http://127.0.0.1:12379,http://127.0.0.1:22379,http://127.0.0.1:32379,http://127.0.0.1:42379 --port 42380 --join"
	@echo "  curl -L http://127.0.0.1:12380/3 -XDELETE"
	@echo "More in docs/quickstart.md. Ctrl-C stops the cluster."
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/honcho start

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .benchmarks site
