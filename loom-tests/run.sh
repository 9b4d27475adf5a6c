#!/usr/bin/env bash
# Runs every loom model (one test binary each) and prints each one's time.
# Usage: loom-tests/run.sh            (LOOM_MAX_PREEMPTIONS defaults to 2)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export RUSTFLAGS="--cfg crossbeam_loom ${LOOM_EXTRA_RUSTFLAGS:-}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/loom}"
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-2}"
export LOOM_MAX_BRANCHES="${LOOM_MAX_BRANCHES:-20000}"
cargo build -q -p loom-tests --release --tests
status=0
for model in loom-tests/tests/*.rs; do
    name=$(basename "$model" .rs)
    start=$(date +%s.%N)
    if cargo test -q -p loom-tests --release --test "$name" >"$CARGO_TARGET_DIR/$name.log" 2>&1; then
        result=ok
    else
        result=FAILED
        status=1
    fi
    printf '%-28s %-7s %6.1f s\n' "$name" "$result" "$(echo "$(date +%s.%N) - $start" | bc)"
done
exit $status
