# Asset Withdrawal System — the two commands are `make up` and `make test`.
# Every target installs what it needs, idempotently (venv, npm packages, apt packages).

SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
BIN := node_modules/.bin
STAMP_PY := $(VENV)/.installed
STAMP_NPM := node_modules/.installed
SDK_TS := sdk/typescript
STAMP_SDK_TS := $(SDK_TS)/node_modules/.installed
PYTEST_ARGS ?=
# make test: pytest-xdist workers, each taking whole test files (a file's module-scoped stack
# stays shared by its tests), the long real-stack files first (tests/conftest.py LONG_FIRST).
# Most of their time is spent waiting on blocks and timers, so two workers overlap well on
# two cores. PYTEST_WORKERS=0 runs everything in one process.
PYTEST_WORKERS ?= 2

.PHONY: help up observe prometheus-bin test fuzz check lint format typecheck buf-lint buf-breaking gen gen-check sdk-typescript sdk-typescript-gen contracts contracts-check deps clean softhsm lock redis-bin bench-gas bench-safe-gas chaos chaos-short chaos-replicas bench-e2e bench-api bench-recovery bench-batch bench-emergency bench-webhooks bench-seeing

##@ run

up: deps redis-bin ## run the whole system on embedded defaults (SQLite, local Redis, anvil, keystore signer)
	$(PY) -m devstack

observe: deps prometheus-bin ## a real Prometheus on 127.0.0.1:9090 scraping the running `make up` stack, with the alert rules
	$(PY) -m devstack.observe

##@ test

test: deps softhsm redis-bin prometheus-bin check ## static checks, then the whole pytest suite on real MariaDB, Redis, anvil, SoftHSM2
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

fuzz: deps redis-bin ## fuzz REST (schemathesis) and gRPC (Hypothesis, every reflected service) on a real gateway, derandomized
	FUZZ_REST_EXAMPLES=$${FUZZ_REST_EXAMPLES:-250} FUZZ_GRPC_EXAMPLES=$${FUZZ_GRPC_EXAMPLES:-1000} $(PY) -m pytest -q tests/fuzz $(PYTEST_ARGS)

# BATCH_E2E_ROWS sets the file's rows (1,000 inside make test).
.PHONY: e2e-batches
e2e-batches: deps redis-bin ## the CSV batch end to end on the real pipeline with a 10,000-row file, judged from the chain
	BATCH_E2E_ROWS=$${BATCH_E2E_ROWS:-10000} $(PY) -m pytest -q -s -p no:cacheprovider -o timeout=1800 tests/e2e/test_batches_e2e.py $(PYTEST_ARGS)

check: lint typecheck buf-lint buf-breaking gen-check contracts-check sdk-typescript ## every static check

lint: $(STAMP_PY) ## ruff lint and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP_PY) ## mypy --strict on our packages
	$(VENV)/bin/mypy

buf-lint: $(STAMP_NPM) ## buf lint and buf format check
	$(BIN)/buf lint
	$(BIN)/buf format --diff --exit-code

buf-breaking: $(STAMP_NPM) ## buf breaking against main (FILE rules)
	@if git rev-parse --verify -q main >/dev/null; then $(BIN)/buf breaking --against '.git#branch=main'; else echo "no main branch yet: skipping buf breaking"; fi

gen-check: gen ## fail when gen/ differs from what proto/ generates
	@git diff --exit-code --stat -- gen third_party/proto || { echo "gen/ drifted from proto/: run 'make gen' and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- gen third_party/proto)" || { git status --porcelain -- gen third_party/proto; echo "untracked generated files: run 'make gen' and commit"; exit 1; }

contracts-check: $(STAMP_NPM) ## fail when contracts/build/ differs from what the sources compile to
	node scripts/compile_contracts.mjs --check

##@ bench

bench-gas: deps ## gas per payment: PayoutVault batches against single ERC-20 transfers
	$(PY) -m bench.gas_per_payment

bench-safe-gas: deps ## gas of one large withdrawal through the treasury Safe (2 of 3) against a hot wallet's payout
	$(PY) -m bench.safe_gas

bench-e2e: deps redis-bin ## end to end: 5 min at 220/s batched against one withdrawal per transaction
	$(PY) -m bench.e2e

# Extra arguments, e.g. BENCH_API_ARGS="--gateway-env GATEWAY_WORKERS=2" or "--gateway-only".
BENCH_API_ARGS ?=
bench-api: deps redis-bin ## CreateWithdrawal over gRPC and REST, open loop, stepped rates, with the processor running
	$(PY) -m bench.api_load $(BENCH_API_ARGS)

bench-recovery: deps redis-bin ## SIGKILL processor, monitor, gateway under load: seconds until 90% again; exactly-once
	$(PY) -m bench.recovery

# Extra arguments, e.g. BENCH_BATCH_ARGS="--only ingest" or "--seconds 120".
BENCH_BATCH_ARGS ?=
bench-batch: deps redis-bin ## CSV batches: ingest of 100k and 1M rows (seconds, gateway memory); sustained batches beside single creates
	$(PY) -m bench.batch $(BENCH_BATCH_ARGS)

bench-emergency: deps redis-bin ## EMERGENCY withdrawals on a congested chain: blocks waited, with and without the emergency wallet
	$(PY) -m bench.emergency

# Extra arguments, e.g. BENCH_WEBHOOKS_ARGS="--duration 60".
BENCH_WEBHOOKS_ARGS ?=
bench-webhooks: deps redis-bin ## webhooks under the e2e load at 100/s: every event delivered to a local receiver, lag p95, CPU per 1,000 events
	$(PY) -m bench.webhooks $(BENCH_WEBHOOKS_ARGS)
# Extra arguments, e.g. BENCH_SEEING_ARGS="--rounds 3" or "--rate 50 --duration 30".
BENCH_SEEING_ARGS ?=
bench-seeing: deps redis-bin prometheus-bin ## the cost of seeing: bench-e2e's load traced at 100 % and scraped against unobserved
	$(PY) -m bench.seeing $(BENCH_SEEING_ARGS)

##@ chaos

chaos: deps redis-bin ## the full chaos run (>= 2,000 withdrawals, 30 kills, 5 reorgs, 500 RPC faults), judged from the chain
	$(PY) -m chaos

chaos-short: deps redis-bin ## the small chaos variant that also runs inside make test
	$(PY) -m chaos --short

chaos-replicas: deps redis-bin ## the full chaos run with two gateways, two processors and two monitors
	$(PY) -m chaos --replicas

##@ gen/build

gen: $(STAMP_PY) ## regenerate gen/ and third_party/proto/ from proto/
	$(PY) scripts/gen_proto.py

sdk-typescript: $(STAMP_SDK_TS) ## compile the TypeScript SDK (sdk/typescript, pinned tsc) into its dist/ (ESM and CommonJS)
	cd $(SDK_TS) && npm run --silent build

sdk-typescript-gen: $(STAMP_PY) $(STAMP_SDK_TS) ## regenerate the TypeScript SDK's openapi.json and its types (openapi-typescript)
	$(PY) -m svc_gateway.rest.partner_openapi $(SDK_TS)/openapi.json
	cd $(SDK_TS) && npm run --silent generate

contracts: $(STAMP_NPM) ## recompile contracts/*.sol into contracts/build/ (solcjs, pinned)
	node scripts/compile_contracts.mjs

format: $(STAMP_PY) ## ruff format and autofix
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

lock: ## re-resolve requirements.lock from pyproject.toml
	$(UV) pip compile pyproject.toml --group dev --python-version 3.11 -q -o requirements.lock

##@ housekeeping

# `make help` prints every target that has a `## description`, under the `##@ heading` above it.
help: ## list the targets by group
	@awk 'BEGIN { FS = ":.*## " } \
		/^##@ / { printf "%s%s\n", (groups++ ? "\n" : ""), substr($$0, 5); next } \
		/^[A-Za-z0-9_.-]+:.*## / { printf "  %-16s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

deps: $(STAMP_PY) $(STAMP_NPM) $(STAMP_SDK_TS) ## install the Python venv and the npm tools (idempotent)

$(STAMP_PY): requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@test -x $(UV) || $(PY) -m pip install -q --disable-pip-version-check "uv==$$(grep -E '^uv==' requirements.lock | cut -d= -f3)"
	$(UV) pip install --python $(PY) -q --compile-bytecode -r requirements.lock
	$(UV) pip install --python $(PY) -q --no-deps -e .
	@touch $@

# `npm install --no-save` installs exactly what package-lock.json pins and leaves it untouched.
# (`npm ci` refuses here: the registry mirror lacks some other platforms' optional buf/anvil
# binaries at the pinned versions, so the lock cannot list them.) .npmrc sets legacy-peer-deps:
# @safe-global/safe-contracts names ethers 5.4.0 as a peer, which only its own scripts use (we
# read its build artifacts), so the peer is neither installed nor listed in the lock.
$(STAMP_NPM): package.json package-lock.json .npmrc
	npm install --no-save --no-audit --no-fund --loglevel=error
	@touch $@

# The TypeScript SDK's own tools (typescript, openapi-typescript, @types/node), exactly as its
# lock pins them: plain JavaScript packages, with no platform binaries, so `npm ci` works here.
$(STAMP_SDK_TS): $(SDK_TS)/package.json $(SDK_TS)/package-lock.json
	cd $(SDK_TS) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

softhsm: ## install SoftHSM2 from Debian's packages when missing
	@command -v softhsm2-util >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq softhsm2 >/dev/null; }

redis-bin: ## install redis-server from Debian's packages when missing (make up may start its own)
	@command -v redis-server >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }

prometheus-bin: ## install prometheus and promtool from Debian's packages when missing
	@command -v promtool >/dev/null && command -v prometheus >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; }

clean: ## remove local state (var/), keeping the venv and node_modules
	rm -rf var build
