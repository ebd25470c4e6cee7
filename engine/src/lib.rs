//! `logcache-engine`: the log-structured, append-only storage engine behind logcache.
//!
//! A store is a directory of segment files. Every write appends a CRC-checked record to the
//! newest (active) segment; a persistent hash index, in a memory-mapped file beside the
//! segments, maps each live key to its newest record. Reads are one index lookup and one look
//! at the record in the segment's map, verified before it is returned. Opening a store maps
//! the index; only after an OS crash or a power cut (or when the index is missing or damaged)
//! is it rebuilt from the segments, cutting off a write torn by the crash.
//! See `docs/format.md` for the on-disk format and `docs/guarantees.md` for what survives what.
//!
//! ```
//! # let dir = tempfile::tempdir().unwrap();
//! use logcache_engine::{Durability, Options, Store};
//! let store = Store::open(dir.path(), Options::default().durability(Durability::Sync))?;
//! store.put(b"answer", b"42")?;
//! drop(store);
//! let store = Store::open(dir.path(), Options::default())?;
//! assert_eq!(store.get(b"answer")?, Some(b"42".to_vec()));
//! # Ok::<(), logcache_engine::Error>(())
//! ```

#![forbid(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod batch;
mod clock;
mod compaction;
mod counters;
mod error;
mod eviction;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzz;
mod group_commit;
mod hint;
mod index;
mod lock;
mod maintenance;
mod migrate;
mod options;
mod output;
mod pacer;
#[cfg(target_os = "linux")]
mod process_mutex;
mod rebuild;
mod record;
mod recovery;
mod repair;
mod scan;
mod segment;
mod shared;
#[cfg(feature = "fuzzing")]
pub mod simdisk;
#[cfg(feature = "fuzzing")]
pub mod simulation;
mod store;
mod verify;
pub mod vfs;
mod worker;
mod writer;

pub use batch::WriteBatch;
pub use compaction::CompactionStats;
pub use error::{Error, Result};
pub use options::{Durability, Options};
pub use record::{MAX_KEY_LEN, MAX_VALUE_LEN};
pub use recovery::{DamagedRange, RecoveryReport, TornTail};
pub use repair::{RepairReport, repair};
pub use segment::FORMAT_VERSION;
pub use store::{Keys, Store, StoreStats};
pub use verify::{Problem, VerifyReport, verify};
