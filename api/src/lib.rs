//! `logcache`: a persistent, typed cache and memoization for Rust.
//!
//! The typed API (memory, disk and Redis backends) is being built; for now this crate
//! re-exports the storage engine.

pub use logcache_engine as engine;
