//! How a typed value is stored, the same on every backend:
//!
//! ```text
//! version u8 (2) | type fingerprint u64 LE | expires_at u64 LE (unix ms, 0 = never)
//! | tag count u8 | per tag: name length u16 LE, name, generation u64 LE
//! | payload (the codec's bytes)
//! ```
//! The fingerprint lets `get::<T>` refuse a value written as another type instead of
//! misreading it; the expiry lets every tier (a memory tier filled from disk, say) refuse an
//! expired value whatever its own TTL; the tag generations let `evict_tag` invalidate entries
//! in O(1).

/// 2: the payload is the self-describing format of `codec` (1 was bincode).
const VERSION: u8 = 2;
const VERSION_LEN: usize = 1;
const FINGERPRINT_AT: usize = VERSION_LEN;
const EXPIRES_AT: usize = FINGERPRINT_AT + 8;
const TAG_COUNT_AT: usize = EXPIRES_AT + 8;
/// The fixed part of the header.
pub(crate) const HEADER_LEN: usize = TAG_COUNT_AT + 1;
const _: () = assert!(HEADER_LEN == 18);

/// A decoded envelope borrowing from the stored bytes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Envelope<'a> {
    pub fingerprint: u64,
    pub expires_at: u64,
    /// The tags' encoding (`tags()` reads it); checked to be well formed.
    tags: &'a [u8],
    pub payload: &'a [u8],
}

impl<'a> Envelope<'a> {
    /// The tags: name and generation at write time.
    pub fn tags(&self) -> impl Iterator<Item = (&'a [u8], u64)> + 'a {
        let mut rest = self.tags;
        std::iter::from_fn(move || {
            let (len, after) = rest.split_first_chunk::<2>()?;
            let (name, after) = after.split_at_checked(usize::from(u16::from_le_bytes(*len)))?;
            let (generation, after) = after.split_first_chunk::<8>()?;
            rest = after;
            Some((name, u64::from_le_bytes(*generation)))
        })
    }
}

/// Appends the header (everything but the payload) to `out`.
pub(crate) fn encode_header(
    fingerprint: u64,
    expires_at: u64,
    tags: &[(&str, u64)],
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let count = u8::try_from(tags.len())
        .map_err(|_| format!("{} tags; at most 255 are allowed", tags.len()))?;
    out.push(VERSION);
    out.extend_from_slice(&fingerprint.to_le_bytes());
    out.extend_from_slice(&expires_at.to_le_bytes());
    out.push(count);
    for (tag, generation) in tags {
        let len =
            u16::try_from(tag.len()).map_err(|_| "a tag longer than 65535 bytes".to_string())?;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(tag.as_bytes());
        out.extend_from_slice(&generation.to_le_bytes());
    }
    Ok(())
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// Parses stored bytes (the tags are checked, not collected).
pub(crate) fn decode(bytes: &[u8]) -> Result<Envelope<'_>, &'static str> {
    if bytes.len() < HEADER_LEN {
        return Err("value envelope cut short");
    }
    if bytes[0] != VERSION {
        return Err("unknown value envelope version");
    }
    let count = bytes[TAG_COUNT_AT];
    let mut end = HEADER_LEN;
    for _ in 0..count {
        let len = bytes.get(end..end + 2).ok_or("value envelope cut short")?;
        end += 2 + usize::from(u16::from_le_bytes([len[0], len[1]])) + 8;
        if end > bytes.len() {
            return Err("value envelope cut short");
        }
    }
    Ok(Envelope {
        fingerprint: u64_at(bytes, FINGERPRINT_AT),
        expires_at: u64_at(bytes, EXPIRES_AT),
        tags: &bytes[HEADER_LEN..end],
        payload: &bytes[end..],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(fingerprint: u64, expires_at: u64, tags: &[(&str, u64)], payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_header(fingerprint, expires_at, tags, &mut out).unwrap();
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn round_trip() {
        let bytes = encode(7, 99, &[("users", 3), ("", 0)], b"payload");
        let env = decode(&bytes).unwrap();
        assert_eq!(env.fingerprint, 7);
        assert_eq!(env.expires_at, 99);
        assert_eq!(
            env.tags().collect::<Vec<_>>(),
            vec![(&b"users"[..], 3), (&b""[..], 0)]
        );
        assert_eq!(env.payload, b"payload");
        let plain = encode(1, 0, &[], b"");
        assert_eq!(decode(&plain).unwrap().tags().count(), 0);
    }

    #[test]
    fn every_cut_is_refused_or_shortens_only_the_payload() {
        let bytes = encode(7, 0, &[("users", 3)], b"payload");
        let header = bytes.len() - b"payload".len();
        for cut in 0..bytes.len() {
            match decode(&bytes[..cut]) {
                Ok(env) => assert!(cut >= header && env.payload.len() == cut - header),
                Err(_) => assert!(cut < header),
            }
        }
        assert!(decode(&[1; 30]).is_err(), "version 1");
        let mut out = Vec::new();
        assert!(encode_header(1, 0, &vec![("t", 0); 256], &mut out).is_err());
    }
}
