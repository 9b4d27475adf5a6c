//! [`DownloadBuffer`]: the lock-free engine at `BufferId → Bytes`, with the [`Buffer`] API.

use std::fmt;
use std::time::Duration;

use crate::engine::{Builder, ExpiringMap};
use crate::janitor::{JanitorRun, JanitorStats};
use crate::{Buffer, BufferId, Bytes, Error};

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
    /// A buffer whose janitor runs every `tick` and drops entries idle for `expire`.
    ///
    /// Errors with [`Error::ZeroDuration`] naming `tick` or `expire` when either is zero.
    pub fn new(tick: Duration, expire: Duration) -> Result<DownloadBuffer, Error> {
        DownloadBuffer::builder(tick, expire).build_download_buffer()
    }

    /// A [`Builder`] for a buffer with a custom clock, manual mode or capacity; finish it
    /// with [`Builder::build_download_buffer`].
    pub fn builder(tick: Duration, expire: Duration) -> Builder {
        Builder::new(tick, expire)
    }

    /// Stores `data` under `id`, replacing any previous value, and resets the entry's life.
    pub fn set(&self, id: BufferId, data: Bytes) {
        // A `Bytes` made from a `Vec` allocates its shared header on its first clone. Do
        // that here, so that every `get` is a plain reference-count increment.
        drop(data.clone());
        self.map.set(id, data)
    }

    /// Returns the value under `id` if it is live, and resets the entry's life.
    pub fn get(&self, id: &BufferId) -> Option<Bytes> {
        self.map.get(id)
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

/// Payloads from this size on are released within one epoch advance of their removal.
const EAGER_RELEASE_BYTES: usize = 16 * 1024;

impl Builder {
    /// Builds a [`DownloadBuffer`] (large payloads are released eagerly; see
    /// [`Builder::build_with_eager_release`]).
    pub fn build_download_buffer(self) -> Result<DownloadBuffer, Error> {
        let map = self.build_with_eager_release(|data: &Bytes| data.len() >= EAGER_RELEASE_BYTES)?;
        Ok(DownloadBuffer { map })
    }
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
