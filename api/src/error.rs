//! The cache's error type.

/// Everything a cache operation can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The disk engine failed (I/O, corruption, a locked directory, a full disk, ...).
    #[error(transparent)]
    Engine(#[from] logcache_engine::Error),
    /// A key or value could not be encoded.
    #[error("could not encode the {what}: {message}")]
    Encode {
        /// `"key"` or `"value"`.
        what: &'static str,
        /// What the encoder said.
        message: String,
    },
    /// The value stored under `key` is not a `type_name`: it was written as another type (or
    /// an earlier shape of this one), or it is damaged.
    #[error("the value under {key} does not decode as {type_name}: {message}")]
    Decode {
        /// The key, as readable text.
        key: String,
        /// The type asked for.
        type_name: &'static str,
        /// What went wrong.
        message: String,
    },
    /// An entry was not stored because it does not fit in a memory cache or tier: larger than
    /// its limit admits per entry, or any entry under `MemoryLimit::Entries(0)`. (Behind a
    /// memory tier, such an entry is stored in the slower tier only, without error.)
    #[error(
        "not stored: an entry of {size} bytes does not fit in memory under {limit:?}, which admits {admits}"
    )]
    TooLarge {
        /// Bytes of the entry's key and value.
        size: u64,
        /// The memory limit.
        limit: crate::MemoryLimit,
        /// What the limit admits per entry.
        admits: String,
    },
    /// A backend other than the disk engine failed (for example a network backend).
    #[error("{backend} backend: {message}")]
    Backend {
        /// Which backend.
        backend: &'static str,
        /// What failed.
        message: String,
    },
}

/// Result alias for cache operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
