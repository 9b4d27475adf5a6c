//! The conformance suite: one set of tests, written once against the [`Buffer`] trait and
//! run against every implementation of it.
//!
//! To add an implementation, add one line at the bottom of this file:
//!
//! ```text
//! conformance_suite!(
//!     module_name,
//!     |tick, expire| path::to::Impl::new(tick, expire),
//!     |tick, expire, max_bytes| /* the same with a byte budget */,
//! );
//! ```
//!
//! The first expression gets `tick` and `expire` (both `Duration`), the second also
//! `max_bytes` (`usize`); both must return `Result<impl Buffer + 'static, Error>`. Each test
//! in the module calls a generic helper in `tests/conformance/suite.rs` (the contract) or
//! `tests/conformance/features.rs` (the operators' features) that only uses `Buffer` trait
//! methods; a new test goes there and gets one name in a list inside `conformance_suite!`.
//!
//! Run it with `cargo test --test conformance`.
//!
//! [`Buffer`]: download_buffer::Buffer

mod common;
#[path = "conformance/features.rs"]
mod features;
#[path = "conformance/suite.rs"]
mod suite;

/// Expands to a module named `$name` holding one `#[test]` per generic test in `suite`,
/// each building its buffers with the given `|tick, expire| ...` expression.
macro_rules! conformance_suite {
    ($name:ident, |$tick:ident, $expire:ident| $make:expr,
     |$btick:ident, $bexpire:ident, $max_bytes:ident| $make_budgeted:expr $(,)?) => {
        mod $name {
            fn make(
                $tick: std::time::Duration,
                $expire: std::time::Duration,
            ) -> Result<impl download_buffer::Buffer + 'static, download_buffer::Error> {
                $make
            }

            fn make_budgeted(
                $btick: std::time::Duration,
                $bexpire: std::time::Duration,
                $max_bytes: usize,
            ) -> Result<impl download_buffer::Buffer + 'static, download_buffer::Error> {
                $make_budgeted
            }

            conformance_tests! {
                features, make;
                set_if_absent_stores_only_when_no_live_entry_has_the_id,
                set_if_absent_race_has_exactly_one_winner_whose_value_is_stored,
                peek_and_contains_key_do_not_extend_life,
                clear_and_retain_leave_len_and_bytes_exact,
                clear_is_weakly_consistent_with_concurrent_writers,
                stats_count_what_happened,
                stats_count_expirations_once_each,
                stats_add_up_across_threads,
            }

            conformance_tests! {
                features, make_budgeted;
                try_set_refuses_past_the_budget_and_counts_replacements_by_difference,
                expired_entries_give_their_bytes_back,
                try_set_never_passes_the_budget_under_concurrent_writers,
            }

            conformance_tests! {
                suite, make;
                // Constructor and the basic calls.
                rejects_zero_tick,
                rejects_zero_expire,
                set_then_get_returns_the_value,
                delete_removes_the_entry,
                fetch_and_delete_returns_once_then_not_found,
                idle_entries_expire_and_are_swept,
                hundred_threads_on_their_own_ids,
                done_keeps_the_buffer_usable,
                done_stops_sweeping_but_get_still_honours_the_deadline,
                works_through_dyn_buffer,
                // One test per semantic in the trait documentation.
                set_replaces_and_resets_life,
                get_returns_a_clone_sharing_memory,
                get_extends_life,
                entries_stay_visible_for_at_least_expire,
                never_returned_past_expire_plus_tick_without_janitor,
                sweep_never_removes_an_entry_touched_concurrently,
                done_is_idempotent_and_safe_from_several_threads,
                drop_without_done_does_not_hang_and_frees_entries,
                duration_max_is_accepted_and_never_expires,
                tick_longer_than_expire_still_expires,
                // Races, stress and sizes.
                fetch_and_delete_race_has_exactly_one_winner,
                mixed_stress_values_always_match_their_key,
                values_of_64_mib,
                empty_values,
            }
        }
    };
}

/// One `#[test] fn name() { module::name(make) }` per listed name.
macro_rules! conformance_tests {
    ($module:ident, $make:ident; $($test:ident),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                crate::$module::$test($make)
            }
        )*
    };
}

/// Ids do not depend on an implementation: tested once.
mod ids {
    use std::collections::HashSet;
    use std::thread;

    use download_buffer::{BufferId, ChunkHandle};

    #[test]
    fn ids_are_unique_across_threads_and_increase_within_each() {
        const THREADS: usize = 4;
        const PER_THREAD: usize = 100_000;
        let per_thread: Vec<Vec<BufferId>> = thread::scope(|s| {
            let workers: Vec<_> = (0..THREADS)
                .map(|_| s.spawn(|| (0..PER_THREAD).map(|_| BufferId::new(ChunkHandle(42))).collect::<Vec<_>>()))
                .collect();
            workers.into_iter().map(|w| w.join().expect("id thread panicked")).collect()
        });
        let mut all = HashSet::with_capacity(THREADS * PER_THREAD);
        for (t, ids) in per_thread.iter().enumerate() {
            for pair in ids.windows(2) {
                assert!(
                    pair[0].timestamp < pair[1].timestamp,
                    "thread {t}: id {} was followed by {}",
                    pair[0],
                    pair[1]
                );
            }
            for id in ids {
                assert_eq!(id.handle, ChunkHandle(42));
                assert!(all.insert(*id), "id {id} was handed out twice");
            }
        }
        assert_eq!(all.len(), THREADS * PER_THREAD);
    }
}

conformance_suite!(
    rwlock,
    |tick, expire| download_buffer::RwLockBuffer::new(tick, expire),
    |tick, expire, max_bytes| download_buffer::RwLockBuffer::with_max_bytes(tick, expire, max_bytes),
);
conformance_suite!(
    lockfree,
    |tick, expire| download_buffer::DownloadBuffer::new(tick, expire),
    |tick, expire, max_bytes| download_buffer::DownloadBuffer::builder(tick, expire).max_bytes(max_bytes).build(),
);
