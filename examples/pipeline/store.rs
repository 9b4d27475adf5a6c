//! The stores the main job runs side by side: the crate's two designs and moka, behind the
//! few calls a chunkserver makes.

use std::time::Duration;

use download_buffer::{Buffer, BufferId, Bytes, DownloadBuffer, Error, RwLockBuffer};

/// What a replica's download buffer does for the simulation.
pub trait Store: Send + Sync {
    /// The forward handler's look-up: is the push already here? (A hit touches the entry.)
    fn get(&self, id: &BufferId) -> Option<Bytes>;
    /// The forward handler's store: keeps `data` unless an entry is there already.
    fn set_if_absent(&self, id: BufferId, data: Bytes) -> bool;
    /// The write: takes the bytes out, once.
    fn fetch_and_delete(&self, id: &BufferId) -> Option<Bytes>;
    /// Entries held.
    fn len(&self) -> u64;
    /// Payload bytes held.
    fn bytes(&self) -> u64;
    /// Called by the sampler every tick: moka does its expiry work only when asked (or as
    /// its calls go); our two have their own janitor threads.
    fn housekeeping(&self) {}
    /// Whether `fetch_and_delete` misses once an entry has expired, whoever has yet to
    /// remove it (our contract); moka's `remove` returns an expired entry not yet evicted.
    fn expires_on_remove(&self) -> bool {
        true
    }
}

/// The implementations, in table order: the first is the baseline of the ratios.
pub const NAMES: [&str; 3] = ["rwlock", "lockfree", "moka"];

/// Builds the store called `name`.
pub fn build(name: &str, tick: Duration, expire: Duration) -> Result<Box<dyn Store>, String> {
    Ok(match name {
        "rwlock" => Box::new(Ours(RwLockBuffer::new(tick, expire).map_err(|error| error.to_string())?)),
        "lockfree" => Box::new(Ours(DownloadBuffer::new(tick, expire).map_err(|error| error.to_string())?)),
        "moka" => Box::new(Moka::new(expire)),
        _ => return Err(format!("unknown implementation '{name}' (known: {})", NAMES.join(", "))),
    })
}

/// `DownloadBuffer` or `RwLockBuffer`, through the crate's `Buffer` trait.
struct Ours<B>(B);

impl<B: Buffer + Send + Sync> Store for Ours<B> {
    fn get(&self, id: &BufferId) -> Option<Bytes> {
        self.0.get(id)
    }

    fn set_if_absent(&self, id: BufferId, data: Bytes) -> bool {
        self.0.set_if_absent(id, data)
    }

    fn fetch_and_delete(&self, id: &BufferId) -> Option<Bytes> {
        match self.0.fetch_and_delete(id) {
            Ok(data) => Some(data),
            Err(Error::NotFound { .. }) => None,
            Err(error) => panic!("fetch_and_delete: {error}"),
        }
    }

    fn len(&self) -> u64 {
        self.0.len() as u64
    }

    fn bytes(&self) -> u64 {
        self.0.stats().bytes
    }
}

/// moka 0.12's concurrent cache with time-to-idle: the closest peer (a read resets the
/// idle timer, as our `get` does). Weighed by payload length, with no capacity limit.
struct Moka(moka::sync::Cache<BufferId, Bytes, ahash::RandomState>);

impl Moka {
    fn new(expire: Duration) -> Moka {
        Moka(
            moka::sync::Cache::builder()
                .time_to_idle(expire)
                .weigher(|_, data: &Bytes| u32::try_from(data.len()).unwrap_or(u32::MAX))
                .max_capacity(u64::MAX)
                .build_with_hasher(ahash::RandomState::new()),
        )
    }
}

impl Store for Moka {
    fn get(&self, id: &BufferId) -> Option<Bytes> {
        self.0.get(id)
    }

    fn set_if_absent(&self, id: BufferId, data: Bytes) -> bool {
        self.0.entry(id).or_insert(data).is_fresh()
    }

    fn fetch_and_delete(&self, id: &BufferId) -> Option<Bytes> {
        self.0.remove(id)
    }

    fn len(&self) -> u64 {
        self.0.entry_count()
    }

    fn bytes(&self) -> u64 {
        self.0.weighted_size()
    }

    fn housekeeping(&self) {
        self.0.run_pending_tasks();
    }

    fn expires_on_remove(&self) -> bool {
        false
    }
}
