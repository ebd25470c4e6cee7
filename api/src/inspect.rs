//! What the typed cache stores, read without its types: for tools (the `logcache` command
//! line), tests and benchmarks. docs/format.md describes the bytes.
//!
//! ```
//! use logcache::inspect;
//! let cache = logcache::Cache::memory(10);
//! cache.set(&("square", 12), &144u32)?;
//! let key = inspect::storage_key("default", 0, &("square", 12)).unwrap();
//! let stored = cache.backend().get(&key)?.expect("stored under that key");
//! let parsed = inspect::parse_key(&key).unwrap();
//! assert_eq!((parsed.namespace.as_str(), parsed.generation), ("default", 0));
//! assert_eq!(inspect::to_json(parsed.key).unwrap(), r#"["square",12]"#);
//! assert_eq!(inspect::to_json(inspect::parse_value(&stored).unwrap().value).unwrap(), "144");
//! # Ok::<(), logcache::Error>(())
//! ```

use std::collections::BTreeMap;

use serde::Serialize;

pub use crate::codec::{
    CodecError, Decoder, decode, encode_key, encode_value, encode_value_into, to_json,
};
use crate::envelope;

/// A storage key taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey<'a> {
    /// The namespace (`"default"`, or a memoized function's path).
    pub namespace: String,
    /// The namespace's generation the key was written in (older than the namespace's
    /// current generation: cleared).
    pub generation: u64,
    /// The user key, encoded (see [`to_json`]). A memoized call's key is the array
    /// `[version, body hash, result type fingerprint, instantiation, argument...]`.
    pub key: &'a [u8],
}

/// Takes a storage key apart; `None` if it is not one the typed cache wrote.
pub fn parse_key(key: &[u8]) -> Option<StoredKey<'_>> {
    let mut decoder = Decoder::new(key);
    let namespace = decoder.skip_value().ok()?;
    let generation = decoder.skip_value().ok()?;
    let user_key = &key[decoder.position()..];
    let mut rest = Decoder::new(user_key);
    rest.skip_value().ok()?;
    rest.end().ok()?;
    Some(StoredKey {
        namespace: decode(namespace).ok()?,
        generation: decode(generation).ok()?,
        key: user_key,
    })
}

/// The storage key of `key` in `namespace` at `generation`.
pub fn storage_key<K: Serialize + ?Sized>(
    namespace: &str,
    generation: u64,
    key: &K,
) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    crate::codec::encode_key_into(namespace, &mut out)?;
    crate::codec::encode_key_into(&generation, &mut out)?;
    crate::codec::encode_key_into(key, &mut out)?;
    Ok(out)
}

/// The name of the backend counter that holds a namespace's generation.
pub fn namespace_counter(namespace: &str) -> String {
    format!("ns:{namespace}")
}

/// A stored value taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredValue<'a> {
    /// The fingerprint of the type it was stored as.
    pub fingerprint: u64,
    /// When it expires, in unix milliseconds (0: never).
    pub expires_at: u64,
    /// Its tags, each with the tag's generation when it was written.
    pub tags: Vec<(String, u64)>,
    /// The value, encoded (see [`to_json`]).
    pub value: &'a [u8],
}

/// Takes stored bytes apart.
pub fn parse_value(bytes: &[u8]) -> Result<StoredValue<'_>, String> {
    let env = envelope::decode(bytes).map_err(str::to_string)?;
    Ok(StoredValue {
        fingerprint: env.fingerprint,
        expires_at: env.expires_at,
        tags: env
            .tags()
            .map(|(name, generation)| (String::from_utf8_lossy(name).into_owned(), generation))
            .collect(),
        value: env.payload,
    })
}

/// The namespace and tag counters of an open disk cache store (empty if it has none).
pub fn disk_counters(store: &logcache_engine::Store) -> crate::Result<BTreeMap<String, u64>> {
    Ok(store.counters()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_the_cache_and_of_this_module_agree() {
        let cache = crate::Cache::memory(10).namespace("ns");
        cache.set("k", &1u8).unwrap();
        let (key, at) = cache.storage_key("k").unwrap();
        assert_eq!(key, storage_key("ns", 0, "k").unwrap());
        let parsed = parse_key(&key).unwrap();
        assert_eq!(parsed.namespace, "ns");
        assert_eq!(parsed.key, &key[at..]);
        assert_eq!(to_json(parsed.key).unwrap(), "\"k\"");
        assert_eq!(parse_key(b"raw key"), None);
        assert_eq!(parse_key(&[0xa1, b'n']), None, "no generation");
        assert_eq!(namespace_counter("ns"), "ns:ns");
    }

    #[test]
    fn values_come_apart() {
        let mut bytes = Vec::new();
        envelope::encode_header(9, 1234, &[("user:1", 2)], &mut bytes).unwrap();
        bytes.extend_from_slice(&encode_value(&"v").unwrap());
        let v = parse_value(&bytes).unwrap();
        assert_eq!(
            (v.fingerprint, v.expires_at, v.tags.clone()),
            (9, 1234, vec![("user:1".to_string(), 2)])
        );
        assert_eq!(to_json(v.value).unwrap(), "\"v\"");
        assert!(parse_value(b"junk").is_err());
    }
}
