# Shared build dir when CARGO_TARGET_DIR is set; cargo's default otherwise.
CARGO ?= cargo

.PHONY: test deps build lint fmt demo

## test: install missing test dependencies, build every binary, run all tests
test: deps build
	$(CARGO) test --workspace

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

## demo: tether in front of an embedded demo origin and worker; prints the URL
demo:
	$(CARGO) run -p tether -- demo
