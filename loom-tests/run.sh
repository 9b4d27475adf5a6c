#!/usr/bin/env bash
# Runs every loom model (one test binary each, and the crate's own `loom_*` unit tests) and
# prints each one's time.
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
    # A model may lower the bound for itself with a line `// loom-max-preemptions: N`.
    bound=$(sed -n 's|^// loom-max-preemptions: \([0-9]*\)$|\1|p' "$model")
    start=$(date +%s.%N)
    if LOOM_MAX_PREEMPTIONS="${bound:-$LOOM_MAX_PREEMPTIONS}" \
        cargo test -q -p loom-tests --release --test "$name" >"$CARGO_TARGET_DIR/$name.log" 2>&1; then
        result=ok
    else
        result=FAILED
        status=1
    fi
    printf '%-28s %-7s %6.1f s  (preemptions %s)\n' "$name" "$result" "$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { print e - s }')" "${bound:-$LOOM_MAX_PREEMPTIONS}"
done
# Models of the engine's internals (the doorbell protocol) live beside the code, as the crate's
# own unit tests named `loom_*`.
start=$(date +%s.%N)
if cargo test -q -p download-buffer --lib --release loom_ >"$CARGO_TARGET_DIR/lib-models.log" 2>&1; then
    result=ok
else
    result=FAILED
    status=1
fi
printf '%-28s %-7s %6.1f s  (preemptions %s)\n' "lib: loom_*" "$result" "$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { print e - s }')" "$LOOM_MAX_PREEMPTIONS"
exit $status
