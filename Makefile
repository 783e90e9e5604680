# Developer entry points. `make demo` and `make test` are the two set-up commands in README.md.
.PHONY: demo test lint fmt bench static

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

# One fully static x86_64 Linux binary, copied to target/shoal-static: musl when its target is
# installed (`rustup target add x86_64-unknown-linux-musl`), otherwise glibc with crt-static.
# A static glibc binary cannot use NSS: upstream host names may not resolve there (IP
# addresses always work); the musl build resolves them itself from /etc/hosts and DNS.
static:
	scripts/static.sh
