.PHONY: test
test:
	cargo test --workspace

# Side-by-side benchmarks of tether, nginx and HAProxy (docs/performance.md).
# Prints tables, asserts nothing. Needs nginx, haproxy, wrk and curl.
.PHONY: bench bench-tools
bench: bench-tools
	cargo build --release -p tether
	ulimit -n 65536 2>/dev/null || true; cargo run --release -p tether-bench

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
