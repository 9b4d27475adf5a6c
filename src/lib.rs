//! A concurrent expiring buffer for chunk data: the download buffer of a Hercules
//! (GFS-style) chunkserver, re-engineered.
//!
//! Clients push chunk bytes (up to 64 MiB) to every replica before a write; each replica
//! holds them under a [`BufferId`] until the write consumes them with
//! [`fetch_and_delete`](Buffer::fetch_and_delete), or until they sit idle for `expire` and
//! a janitor drops them. Every implementation offers the [`Buffer`] trait and obeys the
//! contract written there:
//!
//! - [`RwLockBuffer`]: the reference design (one `RwLock<HashMap>`, a janitor that scans
//!   every entry each tick), the Go original with its defects fixed.
//!
//! ```
//! use std::time::Duration;
//! use download_buffer::{BufferId, Bytes, ChunkHandle, RwLockBuffer};
//!
//! let buffer = RwLockBuffer::new(Duration::from_secs(15), Duration::from_secs(60))?;
//! let id = BufferId::new(ChunkHandle(1));
//! buffer.set(id, Bytes::from(vec![0u8; 1024]));
//! assert_eq!(buffer.get(&id).map(|b| b.len()), Some(1024));
//! let data = buffer.fetch_and_delete(&id)?;
//! assert_eq!(data.len(), 1024);
//! assert!(buffer.is_empty());
//! # Ok::<(), download_buffer::Error>(())
//! ```
#![warn(missing_docs)]

mod buffer;
mod error;
mod id;
mod rwlock;
mod ticker;

pub use buffer::Buffer;
pub use bytes::Bytes;
pub use error::Error;
pub use id::{BufferId, ChunkHandle};
pub use rwlock::RwLockBuffer;
mod clock;
mod sync;
mod wheel;
