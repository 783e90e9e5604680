# Developer entry points. `make demo` and `make test` are the two set-up commands in README.md.
.PHONY: demo test lint fmt bench static fuzz

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

# Fuzzing (fuzz/, cargo-fuzz): every target for FUZZ_SECONDS, new inputs in fuzz/work/TARGET
# (the committed seeds in fuzz/corpus/TARGET stay as they are), crashes in fuzz/artifacts/.
# cargo-fuzz needs unstable compiler flags (-Zsanitizer=address): rustup's nightly toolchain
# when there is one, else the stable compiler with RUSTC_BOOTSTRAP=1. Install it once with
# `cargo install cargo-fuzz`.
FUZZ_SECONDS ?= 600
FUZZ_TARGETS ?= request_head chunked response_head static_path config tls_handshake
FUZZ_CARGO := $(shell rustup toolchain list 2>/dev/null | grep -q '^nightly' \
	&& echo 'cargo +nightly' || echo 'RUSTC_BOOTSTRAP=1 cargo')

fuzz:
	cd fuzz && for target in $(FUZZ_TARGETS); do \
		mkdir -p work/$$target && \
		$(FUZZ_CARGO) fuzz run $$target work/$$target corpus/$$target -- \
			-max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 || exit 1; \
	done
