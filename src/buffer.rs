//! The interface every download-buffer implementation offers.

use crate::{BufferId, Bytes, Error, Stats};

/// A concurrent map from [`BufferId`] to payload bytes whose entries expire when idle.
///
/// Both implementations, the lock-free [`DownloadBuffer`](crate::DownloadBuffer) and the
/// reference [`RwLockBuffer`](crate::RwLockBuffer), obey the same contract, checked by
/// one conformance suite (`tests/conformance.rs`):
///
/// - [`set`](Buffer::set) stores or replaces, and resets the entry's life.
/// - [`get`](Buffer::get) returns a clone of the stored value (for [`Bytes`] a reference
///   count bump, never a copy of the bytes) and resets the entry's life.
/// - [`delete`](Buffer::delete) removes; [`fetch_and_delete`](Buffer::fetch_and_delete)
///   removes and returns atomically: of racing callers exactly one wins.
/// - **Never early:** an entry stays visible for at least `expire` after the start of its
///   last completed `set` or hit (`get` that found it), exactly, however the calls were
///   delayed or raced: a touch never moves a deadline back.
/// - **Never late:** `get`, `delete` and `fetch_and_delete` never find an entry more than
///   `expire + tick` after the end of its last touch, whatever the janitor is doing, and
///   after `done` too.
/// - **Always removed:** while the janitor runs, an entry is removed within `expire + tick`
///   of the end of its last touch, plus however late the janitor was over that span.
/// - The janitor never removes an entry that a touch extended before the janitor claimed
///   it: the two are settled on the entry, and a claim is made only past the deadline.
/// - [`done`](Buffer::done) stops and joins the janitor; it is idempotent and safe from
///   any thread; afterwards the buffer still serves every call, without expiry.
///   Dropping the buffer does what `done` does and frees every entry.
/// - Durations of any size are accepted (`Duration::MAX` means never); nothing
///   overflows or panics.
/// - **What `tick` costs:** it is the janitor's period and the deadlines' grain. The
///   engine keeps deadlines in eighths of the shorter of `tick` and `expire`, so a `tick`
///   much longer than `expire` keeps no entry past `expire × 9/8` (plus the janitor's
///   lateness); its janitor's periodic runs of a buffer come at most once a millisecond
///   (so, for a `tick` under a millisecond, "always removed" holds with 1 ms in place of
///   `tick`), and an idle buffer's sleep until its next entry may be due. The reference design scans
///   every entry every `tick` (at least 1 ms apart), so it keeps an entry until the first
///   scan after its expiry: up to `expire + tick`. A shorter `tick` makes both remove
///   sooner and run more often; neither makes "never early" more or less exact.
/// - **Whose time:** the buffer's clock. The engine built without one reads, on Linux, the
///   kernel's monotonic clock (`Instant`'s: measure it with `Instant::now()`), and judges
///   entries by the kernel's coarse clock where `tick` and `expire` are long enough for its lag
///   (docs/design.md, "Time"); the reference design reads `Instant`.
///
/// The trait is object-safe: benchmarks and embedders can hold a `&dyn Buffer`.
pub trait Buffer: Send + Sync {
    /// Stores `data` under `id`, replacing any previous value, and resets the entry's life.
    fn set(&self, id: BufferId, data: Bytes);

    /// Stores `data` under `id` only if no live entry has that id (an expired one counts as
    /// absent); returns whether it stored. Of racing callers exactly one gets `true`, and its
    /// data is the one stored. Bypasses the byte budget, like `set`.
    fn set_if_absent(&self, id: BufferId, data: Bytes) -> bool;

    /// `set` within the byte budget: [`Error::Full`] (naming the budget, the bytes held and
    /// the bytes asked) when storing would take the bytes held past it; a replacement
    /// needs room only for the difference. Never evicts. Without a budget it always stores.
    fn try_set(&self, id: BufferId, data: Bytes) -> Result<(), Error>;

    /// Returns the value under `id` if it is live, and resets the entry's life.
    fn get(&self, id: &BufferId) -> Option<Bytes>;

    /// The value under `id` if it is live, without extending its life.
    fn peek(&self, id: &BufferId) -> Option<Bytes>;

    /// Whether a live entry has `id`, without extending its life.
    fn contains_key(&self, id: &BufferId) -> bool;

    /// Removes the entry under `id`, if any.
    fn delete(&self, id: &BufferId);

    /// Removes the entry under `id` and returns its value; of racing callers exactly one
    /// gets it. A missing or expired id gives [`Error::NotFound`] naming the id.
    fn fetch_and_delete(&self, id: &BufferId) -> Result<Bytes, Error>;

    /// Removes every entry. Weakly consistent: entries stored while it runs may stay.
    fn clear(&self);

    /// Keeps the live entries for which `keep` returns true, removes the rest. Weakly
    /// consistent, like `clear`.
    fn retain(&self, keep: &mut dyn FnMut(&BufferId, &Bytes) -> bool);

    /// What the buffer has done and holds; see [`Stats`].
    fn stats(&self) -> Stats;

    /// The number of entries held (live entries plus expired ones not yet swept). Exact
    /// when no call runs concurrently; while other calls run, never more than the buffer
    /// held at some instant of the call (it may be lower).
    fn len(&self) -> usize;

    /// Whether [`len`](Buffer::len) is zero.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stops and joins the janitor; idempotent. The buffer keeps serving calls, without expiry.
    fn done(&self);
}
