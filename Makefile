# Shared build dir when CARGO_TARGET_DIR is set; cargo's default otherwise.
CARGO ?= cargo

.PHONY: test test-one-core deps build js-test js-deps lint fmt demo bench bench-wire bench-tools fuzz soak install

## test: install missing test dependencies, build every binary, run all tests
test: deps build
	$(CARGO) test --workspace
	$(MAKE) --no-print-directory test-one-core
	$(MAKE) --no-print-directory js-test

## test-one-core: on one core tether runs a single-threaded runtime (not
## tokio's work-stealing one); the suites that exercise what differs
## (signals, blocking handover work, the request path) run pinned to CPU 0
test-one-core:
	taskset -c 0 $(CARGO) test -p tether-tests --test upgrade --test systemd_notify --test plain_nginx --test session_resume

## js-test: HTTPSocket's tests (clients/js): unit tests against a fake gateway,
## then end to end in Chromium against target/debug/tether (run `build` first).
## Fails, never skips, when Node.js or Chromium is missing (`make deps`).
js-test: js-deps
	@command -v node >/dev/null 2>&1 || { \
		echo "js-test: node (Node.js) not found: scripts/install-test-deps.sh (make deps) installs it" >&2; exit 1; }
	@chromium="$${CHROMIUM_BIN:-/usr/bin/chromium}"; [ -x "$$chromium" ] || { \
		echo "js-test: Chromium not found at $$chromium: scripts/install-test-deps.sh (make deps) installs it" >&2; exit 1; }
	cd clients/js && node --version && node --test

# npm ci only when node_modules is missing or was installed from another lock.
js-deps:
	@command -v npm >/dev/null 2>&1 || { \
		echo "js-deps: npm not found: scripts/install-test-deps.sh (make deps) installs it" >&2; exit 1; }
	@cd clients/js && if cmp -s package-lock.json node_modules/.installed-lock; then \
		echo "js-deps: clients/js/node_modules up to date"; \
	else \
		npm ci --no-audit --no-fund && cp package-lock.json node_modules/.installed-lock; \
	fi

## fuzz: every cargo-fuzz target of fuzz/ for FUZZ_SECS (default 20) seconds
## each; installs cargo-fuzz if missing (scripts/fuzz.sh, docs/testing.md)
fuzz:
	scripts/fuzz.sh

## soak: SOAK_SECS (default 60) of plain traffic to nginx and sessions with
## injected resets; prints tether's RSS over time, losses and duplicates
soak: deps build
	$(CARGO) test -p tether-tests --test soak -- --ignored --nocapture

## deps: the Debian packages the integration tests need (only missing ones)
deps:
	scripts/install-test-deps.sh

## build: every binary of the workspace (integration tests run target/debug/tether)
build:
	$(CARGO) build --workspace --bins

## lint: formatting check and clippy with warnings as errors
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## fmt: format the workspace
fmt:
	$(CARGO) fmt --all

## install: a release build of tether into $(PREFIX)/bin (default /usr/local)
PREFIX ?= /usr/local
install:
	$(CARGO) build --release -p tether
	install -D -m 0755 $${CARGO_TARGET_DIR:-target}/release/tether $(DESTDIR)$(PREFIX)/bin/tether

## demo: tether in front of an embedded demo origin and worker; prints the URL
demo:
	$(CARGO) run -p tether -- demo

# Side-by-side benchmarks of tether, nginx and HAProxy (docs/performance.md).
# Prints tables, asserts nothing. Needs nginx, haproxy, wrk and curl.
# BENCH_ARGS go to tether-bench, e.g. "--baseline /abs/old/tether --out F".
BENCH_ARGS ?=
bench: bench-tools
	$(CARGO) build --release -p tether
	ulimit -n 65536 2>/dev/null || true; $(CARGO) run --release -p tether-bench -- $(BENCH_ARGS)

## bench-wire: Criterion micro-benchmarks of the wire crate's hot paths
## (line framing, replay window, header codecs); numbers, never thresholds
bench-wire:
	$(CARGO) bench -p tether-wire --bench wire

bench-tools:
	@missing=""; \
	for tool in nginx:nginx-light haproxy:haproxy wrk:wrk curl:curl; do \
		bin=$${tool%%:*}; pkg=$${tool#*:}; \
		command -v $$bin >/dev/null 2>&1 || [ -x /usr/sbin/$$bin ] || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update && apt-get install -y $$missing; \
	fi
