#!/usr/bin/env bash
# Runs the conformance suite, the engine's concurrency/reclamation tests and the unit tests
# under AddressSanitizer with LeakSanitizer (use-after-free, double free, leaks), in a target
# dir of its own (the sanitizer rebuilds every dependency).
#
# The stable toolchain ships the ASan runtime; -Zsanitizer needs RUSTC_BOOTSTRAP=1. The
# explicit --target keeps build scripts and proc macros uninstrumented (they run on the host).
# Doctests are not run (only --lib and --test targets are selected), so RUSTDOCFLAGS is unset.
# engine_memory's counting global allocator wraps `System` (malloc, which ASan intercepts)
# and counts layout sizes, so its figures hold under ASan too: it runs here as well.
# A new test binary is not picked up by itself: add it to the list below.
#
# Usage: .ci/asan.sh [extra cargo test args, e.g. -- --nocapture]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

target=x86_64-unknown-linux-gnu
export RUSTC_BOOTSTRAP=1
export RUSTFLAGS="-Zsanitizer=address ${ASAN_EXTRA_RUSTFLAGS:-}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/asan}"
# detect_leaks: LeakSanitizer at exit; halt_on_error/abort_on_error: the first report fails
# the test binary (and so this script); detect_stack_use_after_return catches dangling stack refs.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:halt_on_error=1:abort_on_error=1:detect_stack_use_after_return=1:strict_string_checks=1:check_initialization_order=1}"
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"

cargo test -p download-buffer --target "$target" \
    --lib \
    --test conformance \
    --test engine_reclaim \
    --test engine_len \
    --test engine_growth \
    --test engine_expiry \
    --test engine_memory \
    --test engine_leaks \
    --test engine_soak \
    --test engine_extreme \
    --test engine_janitor_thread \
    --test engine_simulation \
    --test engine_drain \
    --test engine_features \
    --test engine_panics \
    --test engine_panics_janitor \
    --test timing \
    "$@"
