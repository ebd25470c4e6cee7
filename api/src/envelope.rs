//! How a typed value is stored, the same on every backend:
//!
//! ```text
//! version u8 (2) | flags u8 | type fingerprint u64 LE
//! | expires_at u64 LE (unix ms)                  if flags & EXPIRES
//! | tag count u8, per tag: name length u16 LE,
//!   name, generation u64 LE                      if flags & TAGS
//! | payload (the codec's bytes)
//! ```
//! The fingerprint lets `get::<T>` refuse a value written as another type instead of
//! misreading it; the expiry lets every tier (a memory tier filled from disk, say) refuse an
//! expired value whatever its own TTL; the tag generations let `evict_tag` invalidate entries
//! in O(1).

/// 2: the payload is the self-describing format of `codec` (1 was bincode).
const VERSION: u8 = 2;
const FLAGS_AT: usize = 1;
const FINGERPRINT_AT: usize = FLAGS_AT + 1;
/// The fixed part of the header.
const FIXED_LEN: usize = FINGERPRINT_AT + 8;
const _: () = assert!(FIXED_LEN == 10);

/// The entry expires (an `expires_at` follows the fingerprint).
const EXPIRES: u8 = 1;
/// The entry has tags (their count and the tags follow).
const TAGS: u8 = 2;

/// A decoded envelope borrowing from the stored bytes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Envelope<'a> {
    pub fingerprint: u64,
    /// Unix ms; 0 = never.
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

/// Appends the header (everything but the payload) to `out`. `expires_at` 0: never.
pub(crate) fn encode_header(
    fingerprint: u64,
    expires_at: u64,
    tags: &[(&str, u64)],
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let count = u8::try_from(tags.len())
        .map_err(|_| format!("{} tags; at most 255 are allowed", tags.len()))?;
    let mut flags = 0;
    if expires_at != 0 {
        flags |= EXPIRES;
    }
    if count != 0 {
        flags |= TAGS;
    }
    out.extend_from_slice(&[VERSION, flags]);
    out.extend_from_slice(&fingerprint.to_le_bytes());
    if expires_at != 0 {
        out.extend_from_slice(&expires_at.to_le_bytes());
    }
    if count != 0 {
        out.push(count);
        for (tag, generation) in tags {
            let len = u16::try_from(tag.len())
                .map_err(|_| "a tag longer than 65535 bytes".to_string())?;
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(tag.as_bytes());
            out.extend_from_slice(&generation.to_le_bytes());
        }
    }
    Ok(())
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

const CUT_SHORT: &str = "value envelope cut short";

/// Parses stored bytes (the tags are checked, not collected).
pub(crate) fn decode(bytes: &[u8]) -> Result<Envelope<'_>, &'static str> {
    if bytes.len() < FIXED_LEN {
        return Err(CUT_SHORT);
    }
    if bytes[0] != VERSION {
        return Err("unknown value envelope version");
    }
    let flags = bytes[FLAGS_AT];
    if flags & !(EXPIRES | TAGS) != 0 {
        return Err("unknown value envelope flags");
    }
    let fingerprint = u64_at(bytes, FINGERPRINT_AT).ok_or(CUT_SHORT)?;
    let mut at = FIXED_LEN;
    let mut expires_at = 0;
    if flags & EXPIRES != 0 {
        expires_at = u64_at(bytes, at).ok_or(CUT_SHORT)?.max(1);
        at += 8;
    }
    let tags_at = at;
    if flags & TAGS != 0 {
        let count = *bytes.get(at).ok_or(CUT_SHORT)?;
        at += 1;
        for _ in 0..count {
            let len = bytes.get(at..at + 2).ok_or(CUT_SHORT)?;
            at += 2 + usize::from(u16::from_le_bytes([len[0], len[1]])) + 8;
            if at > bytes.len() {
                return Err(CUT_SHORT);
            }
        }
    }
    Ok(Envelope {
        fingerprint,
        expires_at,
        // Past the count byte, if any.
        tags: bytes.get(tags_at + 1..at).unwrap_or_default(),
        payload: &bytes[at..],
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
        let plain = encode(1, 0, &[], b"p");
        assert_eq!(
            plain.len(),
            FIXED_LEN + 1,
            "no expiry, no tags: the fixed header only"
        );
        let env = decode(&plain).unwrap();
        assert_eq!(
            (env.expires_at, env.tags().count(), env.payload),
            (0, 0, &b"p"[..])
        );
    }

    #[test]
    fn every_cut_is_refused_or_shortens_only_the_payload() {
        for (expires, tags) in [
            (0, &[][..]),
            (5, &[][..]),
            (0, &[("users", 3)][..]),
            (5, &[("u", 1), ("v", 2)][..]),
        ] {
            let bytes = encode(7, expires, tags, b"payload");
            let header = bytes.len() - b"payload".len();
            for cut in 0..bytes.len() {
                match decode(&bytes[..cut]) {
                    Ok(env) => assert!(cut >= header && env.payload.len() == cut - header),
                    Err(_) => assert!(cut < header),
                }
            }
        }
        assert!(decode(&[1; 30]).is_err(), "version 1");
        assert!(
            decode(&[VERSION, 4, 0, 0, 0, 0, 0, 0, 0, 0]).is_err(),
            "unknown flags"
        );
        let mut out = Vec::new();
        assert!(encode_header(1, 0, &vec![("t", 0); 256], &mut out).is_err());
    }
}
