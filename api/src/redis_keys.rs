//! Where the Redis backend keeps each key, so that a namespace's generation counter and its
//! entries share one hash slot (one node of a Redis Cluster), and one script reads both.
//!
//! A cache key starts with its namespace's name, a MessagePack string (docs/format.md,
//! *Keys*). Its Redis key is the backend's prefix, a hash tag made from that name (`{` eight
//! hex digits `}`), then the cache key. The counter of namespace `N` (`ns:N`) gets the same
//! tag; other counters (`tag:T`) get a tag of their own name. Keys that do not start with a
//! MessagePack string (a backend used directly) are the prefix and the key.

use crate::namespace::CURRENT_GENERATION;

/// Where the namespace name (a MessagePack string) at the start of `key` ends, and its bytes:
/// `None` if `key` does not start with one.
pub(crate) fn namespace_of(key: &[u8]) -> Option<(usize, &[u8])> {
    let (&first, rest) = key.split_first()?;
    let (header, len) = match first {
        0xa0..=0xbf => (1usize, usize::from(first & 0x1f)),
        0xd9 => (2, usize::from(*rest.first()?)),
        0xda => (
            3,
            usize::from(u16::from_be_bytes(rest.get(..2)?.try_into().ok()?)),
        ),
        0xdb => (
            5,
            usize::try_from(u32::from_be_bytes(rest.get(..4)?.try_into().ok()?)).ok()?,
        ),
        _ => return None,
    };
    let end = header.checked_add(len)?;
    Some((end, key.get(header..end)?))
}

/// The hash tag of namespace (or counter) `name`: `{` then eight hex digits of its FNV-1a
/// hash, then `}`. A hash rather than the name, which may itself hold braces.
fn hash_tag(name: &[u8], out: &mut Vec<u8>) {
    let hash = name.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    out.push(b'{');
    out.extend_from_slice(format!("{hash:08x}").as_bytes());
    out.push(b'}');
}

/// The Redis key of cache key `key` under `prefix`.
pub(crate) fn entry_key(prefix: &[u8], key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len() + 10 + key.len());
    out.extend_from_slice(prefix);
    if let Some((_, name)) = namespace_of(key) {
        hash_tag(name, &mut out);
    }
    out.extend_from_slice(key);
    out
}

/// The Redis key of counter `name` under `prefix`. A NUL byte follows the tag, and no cache
/// key starts with one (it starts with a MessagePack string), so counters never collide with
/// entries.
pub(crate) fn counter_key(prefix: &[u8], name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len() + 20 + name.len());
    out.extend_from_slice(prefix);
    let slot_name = name.strip_prefix("ns:").unwrap_or(name);
    hash_tag(slot_name.as_bytes(), &mut out);
    out.extend_from_slice(b"\0counter:");
    out.extend_from_slice(name.as_bytes());
    out
}

/// A cache key whose generation the backend must find: its namespace's name, the Redis key
/// up to the generation, and the rest of the cache key after it.
pub(crate) struct CurrentKey<'a> {
    /// The namespace's name.
    pub namespace: &'a str,
    /// The Redis key up to where the generation goes.
    pub head: Vec<u8>,
    /// The cache key after the generation.
    pub tail: &'a [u8],
}

/// `key` split for a script that puts the current generation in, if it holds
/// `CURRENT_GENERATION` after its namespace's name.
pub(crate) fn current_key<'a>(prefix: &[u8], key: &'a [u8]) -> Option<CurrentKey<'a>> {
    let (end, name) = namespace_of(key)?;
    if key.get(end) != Some(&CURRENT_GENERATION) {
        return None;
    }
    let namespace = std::str::from_utf8(name).ok()?;
    Some(CurrentKey {
        namespace,
        head: entry_key(prefix, &key[..end]),
        tail: &key[end + 1..],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgpack_str(s: &str) -> Vec<u8> {
        let mut out = Vec::new();
        crate::codec::encode_key_into(s, &mut out).unwrap();
        out
    }

    #[test]
    fn names_of_every_length_are_found() {
        for len in [0usize, 1, 31, 32, 255, 256, 65_535, 65_536] {
            let name = "n".repeat(len);
            let mut key = msgpack_str(&name);
            let end = key.len();
            key.extend_from_slice(b"\x07rest");
            assert_eq!(namespace_of(&key), Some((end, name.as_bytes())), "{len}");
        }
        assert_eq!(namespace_of(b""), None);
        assert_eq!(namespace_of(b"\xa5ab"), None, "cut short");
        assert_eq!(namespace_of(b"\x00key"), None);
    }

    #[test]
    fn a_namespace_and_its_counter_share_a_hash_tag() {
        let mut key = msgpack_str("users");
        key.extend_from_slice(&[3, 0xa1, b'k']);
        let entry = entry_key(b"p:", &key);
        let counter = counter_key(b"p:", "ns:users");
        let tag = |k: &[u8]| {
            let open = k.iter().position(|&b| b == b'{').unwrap();
            let close = k.iter().position(|&b| b == b'}').unwrap();
            k[open..=close].to_vec()
        };
        assert_eq!(tag(&entry), tag(&counter));
        assert_ne!(tag(&entry), tag(&counter_key(b"p:", "ns:other")));
        assert!(entry.starts_with(b"p:{") && entry.ends_with(&key));
        assert!(counter.ends_with(b"}\0counter:ns:users"));
        assert_eq!(entry_key(b"p:", b"raw"), b"p:raw");
    }

    #[test]
    fn only_keys_holding_the_placeholder_are_resolved() {
        let mut key = msgpack_str("ns");
        key.push(CURRENT_GENERATION);
        key.extend_from_slice(b"user-key");
        let current = current_key(b"p:", &key).unwrap();
        assert_eq!(current.namespace, "ns");
        assert_eq!(current.tail, b"user-key");
        assert!(current.head.ends_with(&msgpack_str("ns")));
        key[3] = 5; // generation 5
        assert!(current_key(b"p:", &key).is_none());
    }
}
