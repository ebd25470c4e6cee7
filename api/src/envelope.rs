//! How a typed value is stored, the same on every backend:
//!
//! ```text
//! version u8 (1) | type fingerprint u64 LE | expires_at u64 LE (unix ms, 0 = never)
//! | tag count u8 | per tag: name length u16 LE, name, generation u64 LE
//! | payload (the codec's bytes)
//! ```
//! The fingerprint lets `get::<T>` refuse a value written as another type instead of
//! misreading it; the expiry lets every tier (a memory tier filled from disk, say) refuse an
//! expired value whatever its own TTL; the tag generations let `evict_tag` invalidate entries
//! in O(1).

/// 2: the payload is the self-describing format of `codec` (1 was bincode).
const VERSION: u8 = 2;

/// A decoded envelope borrowing from the stored bytes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Envelope<'a> {
    pub fingerprint: u64,
    pub expires_at: u64,
    pub tags: Vec<(&'a [u8], u64)>,
    pub payload: &'a [u8],
}

/// Builds the stored bytes.
pub(crate) fn encode(
    fingerprint: u64,
    expires_at: u64,
    tags: &[(&str, u64)],
    payload: &[u8],
) -> Result<Vec<u8>, String> {
    if tags.len() > usize::from(u8::MAX) {
        return Err(format!("{} tags; at most 255 are allowed", tags.len()));
    }
    let tag_bytes: usize = tags.iter().map(|(t, _)| t.len() + 10).sum();
    let mut out = Vec::with_capacity(18 + tag_bytes + payload.len());
    out.push(VERSION);
    out.extend_from_slice(&fingerprint.to_le_bytes());
    out.extend_from_slice(&expires_at.to_le_bytes());
    out.push(tags.len() as u8);
    for (tag, generation) in tags {
        let len =
            u16::try_from(tag.len()).map_err(|_| "a tag longer than 65535 bytes".to_string())?;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(tag.as_bytes());
        out.extend_from_slice(&generation.to_le_bytes());
    }
    out.extend_from_slice(payload);
    Ok(out)
}

fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8], &'static str> {
    if bytes.len() < n {
        return Err("value envelope cut short");
    }
    let (head, rest) = bytes.split_at(n);
    *bytes = rest;
    Ok(head)
}

/// Parses stored bytes.
pub(crate) fn decode(mut bytes: &[u8]) -> Result<Envelope<'_>, &'static str> {
    let b = &mut bytes;
    if take(b, 1)?[0] != VERSION {
        return Err("unknown value envelope version");
    }
    let fingerprint = u64::from_le_bytes(take(b, 8)?.try_into().expect("8 bytes"));
    let expires_at = u64::from_le_bytes(take(b, 8)?.try_into().expect("8 bytes"));
    let count = take(b, 1)?[0];
    let mut tags = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let len = u16::from_le_bytes(take(b, 2)?.try_into().expect("2 bytes"));
        let name = take(b, usize::from(len))?;
        let generation = u64::from_le_bytes(take(b, 8)?.try_into().expect("8 bytes"));
        tags.push((name, generation));
    }
    Ok(Envelope {
        fingerprint,
        expires_at,
        tags,
        payload: bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let bytes = encode(7, 99, &[("users", 3), ("", 0)], b"payload").unwrap();
        let env = decode(&bytes).unwrap();
        assert_eq!(env.fingerprint, 7);
        assert_eq!(env.expires_at, 99);
        assert_eq!(env.tags, vec![(&b"users"[..], 3), (&b""[..], 0)]);
        assert_eq!(env.payload, b"payload");
    }

    #[test]
    fn every_cut_is_refused_or_shortens_only_the_payload() {
        let bytes = encode(7, 0, &[("users", 3)], b"payload").unwrap();
        let header = bytes.len() - b"payload".len();
        for cut in 0..bytes.len() {
            match decode(&bytes[..cut]) {
                Ok(env) => assert!(cut >= header && env.payload.len() == cut - header),
                Err(_) => assert!(cut < header),
            }
        }
        assert!(decode(&[2]).is_err());
        assert!(encode(1, 0, &vec![("t", 0); 256], b"").is_err());
    }
}
