#!/usr/bin/env bash
# Proves the loom models bite: builds the engine with each deliberately broken variant
# (`--cfg loom_broken="..."`, see the cfg!(loom_broken = ...) sites in src/) and runs the model
# that must catch it. Fails if any broken variant passes its model.
# Usage: loom-tests/check-broken.sh [variant ...]     (default: all)
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# variant -> the model (test binary in loom-tests/tests) that must fail on it. A variant checked
# against a second model is listed again as `variant@model`. `test:NAME` instead names one of
# the crate's own test binaries (tests/NAME.rs), built without loom: for liveness bugs, which
# the seeded simulation catches and loom's few steps cannot. `lib:FILTER` runs the crate's own
# unit tests matching FILTER under loom (models of internals, such as the doorbell's).
declare -A CATCHER=(
    [relaxed_publish]=publish
    [remove_ignores_mark]=fetch_and_delete_race
    [copy_without_ticket]=lib:loom_a_removal_racing_a_migration
    [premature_free]=delete_get
    [touch_ignores_claim]=janitor_touch
    [janitor_blind_claim]=janitor_touch
    [relaxed_find]=set_get
    [premature_free@janitor_remove]=janitor_remove
    [stop_without_lock]=done_race
    [len_no_undo]=len_counters
    [replace_forgets_touches]=set_touch
    [touch_ignores_replaced]=set_touch
    [finish_overwrites_touch]=set_touch
    [finish_forgets_successor]=set_set
    [time_cut_forgets_more_due]=test:engine_simulation
    [budget_check_then_add]=budget
    [ring_checks_by_load]=lib:loom_
    [take_ignores_readers]=delete_get
    [take_after_claim]=janitor_remove
    [set_if_absent_takes_after_claim]=janitor_set_if_absent
    [janitor_releases_now]=janitor_remove
    [after_done_releases_taken_now]=done_race
)
variants=("$@")
[ ${#variants[@]} -eq 0 ] && mapfile -t variants < <(printf "%s\n" "${!CATCHER[@]}" | sort)

export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-2}"
export LOOM_MAX_BRANCHES="${LOOM_MAX_BRANCHES:-20000}"
status=0
for variant in "${variants[@]}"; do
    model=${CATCHER[$variant]:?unknown variant $variant}
    cfg=${variant%@*}
    dir="target/loom-broken/$cfg"
    mkdir -p "$dir"
    start=$(date +%s)
    if [[ $model == lib:* ]]; then
        RUSTFLAGS="--cfg crossbeam_loom --cfg loom_broken=\"$cfg\"" CARGO_TARGET_DIR="$dir" \
            cargo test -q -p download-buffer --lib --release "${model#lib:}" >"$dir/run.log" 2>&1
    elif [[ $model == test:* ]]; then
        RUSTFLAGS="--cfg loom_broken=\"$cfg\"" CARGO_TARGET_DIR="$dir" \
            cargo test -q --release --test "${model#test:}" >"$dir/run.log" 2>&1
    else
        bound=$(sed -n 's|^// loom-max-preemptions: \([0-9]*\)$|\1|p' "loom-tests/tests/$model.rs")
        LOOM_MAX_PREEMPTIONS="${bound:-$LOOM_MAX_PREEMPTIONS}" RUSTFLAGS="--cfg crossbeam_loom --cfg loom_broken=\"$cfg\"" CARGO_TARGET_DIR="$dir" \
            cargo test -q -p loom-tests --release --test "$model" >"$dir/run.log" 2>&1
    fi
    rc=$?
    took=$(( $(date +%s) - start ))
    if [ $rc -eq 0 ]; then
        printf '%-22s model %-22s PASSED (the model missed the bug!)  %4d s\n' "$variant" "$model" "$took"
        status=1
    elif grep -q "error\[E\|could not compile" "$dir/run.log"; then
        printf '%-22s model %-22s BUILD FAILED (see %s)\n' "$variant" "$model" "$dir/run.log"
        status=1
    else
        reason=$(grep -m1 -E "panicked at|Causality|assertion" -A1 "$dir/run.log" | tr '\n' ' ' | cut -c1-150)
        printf '%-22s model %-22s caught  %4d s  %s\n' "$variant" "$model" "$took" "$reason"
    fi
done
exit $status
