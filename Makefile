# Developer entry points. `make demo` and `make test` are the two set-up commands in README.md.
.PHONY: demo test lint fmt bench

demo:
	cargo build --release
	@echo "shoal demo: open http://127.0.0.1:8080/ (Ctrl-C stops)"
	./target/release/shoal -c examples/shoal.toml

test:
	cargo test --all-targets

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings

fmt:
	cargo fmt --all

bench:
	scripts/bench.sh
