//! [`DownloadBuffer`]: the lock-free engine at `BufferId → Bytes`, with the [`Buffer`] API.

use std::fmt;

use crate::engine::ExpiringMap;
use crate::janitor::{JanitorRun, JanitorStats};
use crate::{Buffer, BufferId, Bytes, Error, Stats};

/// The lock-free download buffer: an [`ExpiringMap`] from [`BufferId`] to [`Bytes`].
///
/// Same contract as every [`Buffer`]; see the trait for the semantics.
///
/// ```
/// use std::time::Duration;
/// use download_buffer::{BufferId, Bytes, ChunkHandle, DownloadBuffer};
///
/// let buffer = DownloadBuffer::new(Duration::from_secs(15), Duration::from_secs(60))?;
/// let id = BufferId::new(ChunkHandle(7));
/// buffer.set(id, Bytes::from(vec![1u8; 4096]));
/// assert_eq!(buffer.get(&id).map(|b| b.len()), Some(4096));
/// assert_eq!(buffer.fetch_and_delete(&id)?.len(), 4096);
/// assert!(buffer.fetch_and_delete(&id).is_err());
/// # Ok::<(), download_buffer::Error>(())
/// ```
pub struct DownloadBuffer {
    map: ExpiringMap<BufferId, Bytes>,
}

impl DownloadBuffer {
    /// Wraps a map built by the [`Builder`](crate::Builder).
    pub(crate) fn from_map(map: ExpiringMap<BufferId, Bytes>) -> DownloadBuffer {
        DownloadBuffer { map }
    }

    /// Stores `data` under `id`, replacing any previous value, and resets the entry's life.
    /// Counted in the bytes held, past the byte budget if need be (see
    /// [`try_set`](Self::try_set)).
    pub fn set(&self, id: BufferId, data: Bytes) {
        self.map.set(id, shared(data))
    }

    /// Stores `data` under `id` only if no live entry has that id (an expired one counts as
    /// absent); returns whether it stored. Of racing callers exactly one gets `true`, and
    /// its data is what is stored: a forward handler that must not overwrite a push that
    /// arrived first uses this instead of a `get` then a `set`, which race.
    pub fn set_if_absent(&self, id: BufferId, data: Bytes) -> bool {
        self.map.set_if_absent(id, shared(data))
    }

    /// [`set`](Self::set) within the byte budget ([`Builder::max_bytes`](crate::Builder::max_bytes)):
    /// refuses with [`Error::Full`] when storing would take the bytes held past the budget
    /// (a replacement needs room only for the difference). It never evicts: the entries are
    /// in-flight writes; the caller answers "busy" and the client retries. However writers
    /// race, the bytes held never exceed the budget through `try_set`.
    pub fn try_set(&self, id: BufferId, data: Bytes) -> Result<(), Error> {
        self.map.try_set(id, shared(data))
    }

    /// Returns the value under `id` if it is live, and resets the entry's life.
    pub fn get(&self, id: &BufferId) -> Option<Bytes> {
        self.map.get(id)
    }

    /// The value under `id` if it is live, without extending its life.
    pub fn peek(&self, id: &BufferId) -> Option<Bytes> {
        self.map.peek(id)
    }

    /// Whether a live entry has `id`; does not extend its life.
    pub fn contains_key(&self, id: &BufferId) -> bool {
        self.map.contains_key(id)
    }

    /// Removes the entry under `id`, if any.
    pub fn delete(&self, id: &BufferId) {
        self.map.delete(id);
    }

    /// Removes the entry under `id` and returns its value; of racing callers exactly one
    /// gets it. A missing or expired id gives [`Error::NotFound`].
    pub fn fetch_and_delete(&self, id: &BufferId) -> Result<Bytes, Error> {
        self.map.fetch_and_delete(id).ok_or(Error::NotFound { id: *id })
    }

    /// Removes every buffer; weakly consistent with concurrent calls (see
    /// [`ExpiringMap::clear`]).
    pub fn clear(&self) {
        self.map.clear()
    }

    /// Keeps the live buffers for which `keep` returns true (drop every buffer of a deleted
    /// chunk, say); weakly consistent with concurrent calls (see [`ExpiringMap::retain`]).
    pub fn retain(&self, keep: impl FnMut(&BufferId, &Bytes) -> bool) {
        self.map.retain(keep)
    }

    /// The byte budget, if [`Builder::max_bytes`](crate::Builder::max_bytes) set one.
    pub fn max_bytes(&self) -> Option<usize> {
        self.map.max_bytes()
    }

    /// Hits, misses, inserts, removals, expirations, entries and bytes held; see [`Stats`].
    pub fn stats(&self) -> Stats {
        self.map.stats()
    }

    /// The number of entries held (live ones plus expired ones the janitor has not removed);
    /// see [`ExpiringMap::len`] for what it means under concurrency.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the buffer holds no entry.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Stops and joins the janitor; idempotent and safe from any thread. The buffer keeps
    /// serving every call afterwards, without expiry sweeps.
    pub fn done(&self) {
        self.map.done()
    }

    /// Runs the janitor once now (see [`ExpiringMap::run_janitor`]); for manual mode.
    pub fn run_janitor(&self) -> JanitorRun {
        self.map.run_janitor()
    }

    /// Counters over the janitor's life.
    pub fn janitor_stats(&self) -> JanitorStats {
        self.map.janitor_stats()
    }

    /// The engine underneath.
    pub fn as_map(&self) -> &ExpiringMap<BufferId, Bytes> {
        &self.map
    }
}

/// A `Bytes` made from a `Vec` allocates its shared header on its first clone. Do that
/// before storing it, so that every `get` is a plain reference-count increment.
fn shared(data: Bytes) -> Bytes {
    drop(data.clone());
    data
}

impl fmt::Debug for DownloadBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DownloadBuffer").field("map", &self.map).finish()
    }
}

impl Buffer for DownloadBuffer {
    fn set(&self, id: BufferId, data: Bytes) {
        DownloadBuffer::set(self, id, data)
    }
    fn set_if_absent(&self, id: BufferId, data: Bytes) -> bool {
        DownloadBuffer::set_if_absent(self, id, data)
    }
    fn try_set(&self, id: BufferId, data: Bytes) -> Result<(), Error> {
        DownloadBuffer::try_set(self, id, data)
    }
    fn peek(&self, id: &BufferId) -> Option<Bytes> {
        DownloadBuffer::peek(self, id)
    }
    fn contains_key(&self, id: &BufferId) -> bool {
        DownloadBuffer::contains_key(self, id)
    }
    fn clear(&self) {
        DownloadBuffer::clear(self)
    }
    fn retain(&self, keep: &mut dyn FnMut(&BufferId, &Bytes) -> bool) {
        DownloadBuffer::retain(self, keep)
    }
    fn stats(&self) -> Stats {
        DownloadBuffer::stats(self)
    }
    fn get(&self, id: &BufferId) -> Option<Bytes> {
        DownloadBuffer::get(self, id)
    }
    fn delete(&self, id: &BufferId) {
        DownloadBuffer::delete(self, id)
    }
    fn fetch_and_delete(&self, id: &BufferId) -> Result<Bytes, Error> {
        DownloadBuffer::fetch_and_delete(self, id)
    }
    fn len(&self) -> usize {
        DownloadBuffer::len(self)
    }
    fn done(&self) {
        DownloadBuffer::done(self)
    }
}
