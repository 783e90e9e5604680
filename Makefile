# Developer entry points. `make demo` and `make test` are the two set-up commands in README.md.
.PHONY: demo test lint fmt bench

# Builds shoal and the demo legacy app (examples/legacy_app.rs); runs the app in the background
# and shoal in the foreground in front of it; stops the app when shoal exits (Ctrl-C).
demo:
	scripts/demo.sh

test:
	cargo test --all-targets

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings

fmt:
	cargo fmt --all

bench:
	scripts/bench.sh
