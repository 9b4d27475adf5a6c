//! A concurrent expiring buffer for chunk data: the download buffer of a Hercules
//! (GFS-style) chunkserver, re-engineered.
//!
//! Clients push chunk bytes (up to 64 MiB) to every replica before a write; each replica
//! holds them under a [`BufferId`] until the write consumes them with
//! [`fetch_and_delete`](Buffer::fetch_and_delete), or until they sit idle for `expire` and
//! a janitor drops them. Every implementation offers the [`Buffer`] trait and obeys the
//! contract written there:
//!
//! - [`DownloadBuffer`]: the lock-free engine. An open-addressing hash table with lock-free
//!   incremental migrations and crossbeam-epoch reclamation holds the entries; a hit extends an entry's deadline with
//!   one CAS on the entry; a janitor owning a hierarchical timing wheel expires what is due,
//!   in work proportional to the entries due, never to the entries held. It is
//!   [`ExpiringMap`] (generic over key, value and hasher) at `BufferId → Bytes`.
//! - [`RwLockBuffer`]: the reference design (one `RwLock<HashMap>`, a janitor that scans
//!   every entry each tick), the Go original with its defects fixed.
//!
//! Expiry tests and embedders with their own event loop use manual mode
//! ([`Builder::manual`]) and a [`ManualClock`].
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
//!
//! # Testing your code with loom
//!
//! Code that shares a map between threads can be model-checked with
//! [loom](https://docs.rs/loom) together with the engine. Build with
//! `RUSTFLAGS="--cfg crossbeam_loom"`: the engine then takes its atomics, cells, `Arc` and
//! thread-locals from loom, and builds crossbeam-epoch on loom (this crate's `Cargo.toml`
//! turns on crossbeam-epoch's `loom` feature under that cfg), so loom explores the engine's
//! interleavings along with yours. Inside a model:
//!
//! - build maps in **manual mode** ([`Builder::manual`]) and drive the janitor with
//!   [`ExpiringMap::run_janitor`] from a model thread: the process's janitor thread is not
//!   available under loom (a map built without `manual` panics there);
//! - give the map a [`Clock`] whose time is a loom atomic if a thread's clock read should
//!   race another thread moving time (a [`ManualClock`] is a std atomic, which loom does not
//!   schedule);
//! - give it a fixed hasher ([`Builder::hasher`], e.g. `BuildHasherDefault<DefaultHasher>`):
//!   loom replays executions, and the default hasher's seeds differ per map;
//! - use a separate `CARGO_TARGET_DIR` (the cfg rebuilds every dependency) and keep models to
//!   two or three threads and a few operations (`LOOM_MAX_PREEMPTIONS=2`).
//!
//! ```text
//! [target.'cfg(crossbeam_loom)'.dev-dependencies]
//! loom = "0.7"
//!
//! RUSTFLAGS="--cfg crossbeam_loom" CARGO_TARGET_DIR=target/loom cargo test --release --test my_model
//! ```
//!
//! This crate's own models (`loom-tests/`, `docs/loom.md`) are written that way.
#![warn(missing_docs, missing_debug_implementations)]
// Every `unsafe` block names the invariant it relies on (docs/design.md).
#![warn(clippy::undocumented_unsafe_blocks)]
#![cfg_attr(doctest, doc = include_str!("../README.md"))]

mod buffer;
mod builder;
mod clock;
mod counter;
mod doorbell;
mod download;
mod engine;
mod entry;
mod error;
mod id;
mod intake;
mod janitor;
mod lease;
mod life;
mod reclaim;
mod rwlock;
mod scheduler;
mod slots;
mod stats;
mod sweep;
mod sync;
mod table;
mod ticker;
mod weights;
mod wheel;

pub use buffer::Buffer;
pub use builder::Builder;
#[doc(no_inline)]
pub use bytes::Bytes;
pub use clock::{Clock, ManualClock, SystemClock};
pub use download::DownloadBuffer;
pub use engine::{ExpiringMap, DEFAULT_JANITOR_BUDGET};
pub use error::Error;
pub use id::{BufferId, ChunkHandle};
pub use janitor::{JanitorRun, JanitorStats};
pub use rwlock::RwLockBuffer;
pub use stats::Stats;
