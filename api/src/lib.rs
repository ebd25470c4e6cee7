//! `logcache`: a persistent, typed cache and memoization for Rust.
//!
//! Programs that call slow or costly functions (an LLM call returning a structured result, a
//! remote API, a heavy computation) memoize them: the first call computes, later calls, even
//! after a restart, return the stored result in microseconds. Python does this in three
//! tiers, `functools.cache`, `diskcache` and Redis, behind one decorator; logcache gives Rust
//! the same tiers behind one typed API:
//!
//! - [`Cache::memory`]: in this process, bounded by entries or bytes;
//! - [`Cache::open`]: on disk, on logcache's own crash-safe engine ([`engine`]);
//! - any [`Backend`], with a memory tier in front if wanted ([`CacheBuilder::memory_tier`]).
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use logcache::memoize;
//!
//! #[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
//! struct UserDetail {
//!     name: String,
//!     age: u8,
//! }
//!
//! static CACHE: std::sync::LazyLock<logcache::Cache> =
//!     std::sync::LazyLock::new(|| logcache::Cache::memory(1000));
//!
//! #[memoize(cache = CACHE, ttl = "1h")]
//! fn extract(text: &str) -> UserDetail {
//!     // Imagine a slow LLM call here.
//!     UserDetail { name: text.split(' ').next().unwrap().into(), age: 25 }
//! }
//!
//! assert_eq!(extract("Jason is 25").name, "Jason"); // computed
//! assert_eq!(extract("Jason is 25").name, "Jason"); // from the cache
//! assert_eq!(CACHE.stats().total.hits, 1);
//! ```
//!
//! Values are encoded with serde in a self-describing format (MessagePack, see
//! docs/format.md) together with a fingerprint of their type's shape: reading a value as
//! another type, or an old shape of the same type, is [`Error::Decode`] for [`Cache::get`]
//! and a miss (recompute, overwrite) for memoization. Any serde type works, `serde_json::Value`
//! and `#[serde(untagged)]`, `flatten` and `skip_serializing_if` included; see [`Value`].

#![warn(missing_docs)]

mod backend;
mod blocking;
mod buffers;
mod builder;
mod cache;
mod codec;
mod disk;
#[cfg(target_os = "linux")]
mod disk_leases;
mod envelope;
mod error;
mod fingerprint;
mod flight;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzz;
pub mod inspect;
mod lease;
pub mod memo;
mod memory;
mod namespace;
#[cfg(feature = "redis")]
mod redis_backend;
#[cfg(feature = "redis")]
mod redis_keys;
mod stats;
mod tiered;

pub use backend::Backend;
pub use backend::{BackendFuture, Leased, Stored};
pub use builder::CacheBuilder;
pub use cache::{Cache, DEFAULT_NAMESPACE, SetOptions, Value};
pub use disk::DiskBackend;
pub use error::{Error, Result};
pub use fingerprint::type_fingerprint;
pub use logcache_engine as engine;
pub use logcache_macros::memoize;
pub use memory::{MemoryBackend, MemoryLimit};
#[cfg(feature = "redis")]
pub use redis_backend::RedisBackend;
pub use stats::{CacheStats, Counts, TierStats};
pub use tiered::TieredBackend;
