//! Record encoding and validation.
//!
//! ```text
//! crc32 u32 | flags u8 | expires_at u64 | key_len u32 | value_len u32 | key | value
//! ```
//! All integers little-endian. The CRC-32 (IEEE polynomial) covers every byte after itself.
//! See `docs/format.md`.

/// Bytes before the key.
pub(crate) const RECORD_HEADER_LEN: usize = 21;
/// Format limit on key length; `Options::max_key_size` may not exceed it.
pub const MAX_KEY_LEN: usize = 1 << 20;
/// Format limit on value length (a record with the longest key and value fits in a segment);
/// `Options::max_value_size` may not exceed it.
pub const MAX_VALUE_LEN: usize = (1 << 30) - (2 << 20);

/// The record deletes its key; its value is empty.
pub(crate) const FLAG_TOMBSTONE: u8 = 1;
/// The next record belongs to the same atomic batch; the batch commits at its first record
/// without this flag.
pub(crate) const FLAG_BATCH_CONTINUES: u8 = 2;
const KNOWN_FLAGS: u8 = FLAG_TOMBSTONE | FLAG_BATCH_CONTINUES;

/// A validated record borrowed from a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Record<'a> {
    pub flags: u8,
    pub expires_at: u64,
    pub key: &'a [u8],
    pub value: &'a [u8],
}

impl Record<'_> {
    /// Whether this record deletes its key.
    pub fn is_tombstone(&self) -> bool {
        self.flags & FLAG_TOMBSTONE != 0
    }

    /// Whether the next record belongs to the same batch.
    pub fn batch_continues(&self) -> bool {
        self.flags & FLAG_BATCH_CONTINUES != 0
    }

    /// Encoded length of this record.
    pub fn encoded_len(&self) -> usize {
        encoded_len(self.key.len(), self.value.len())
    }
}

/// Why bytes are not a valid record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// The buffer ends before the record does: a torn write if it is the end of the log.
    Truncated,
    /// The bytes are present but wrong.
    Invalid(&'static str),
}

impl DecodeError {
    /// A short description for error messages.
    pub fn reason(self) -> &'static str {
        match self {
            DecodeError::Truncated => "record cut short",
            DecodeError::Invalid(reason) => reason,
        }
    }
}

/// Encoded length of a record with these key and value lengths.
pub(crate) fn encoded_len(key_len: usize, value_len: usize) -> usize {
    RECORD_HEADER_LEN + key_len + value_len
}

/// Records of format version 2 start at multiples of this many bytes; the bytes between one
/// record's end and the next record are zero.
pub(crate) const ALIGN: usize = 8;

/// Bytes a record of `encoded_len` bytes spans in a segment of format `version`: padded to
/// [`ALIGN`] in version 2, packed in version 1.
pub(crate) fn span(encoded_len: usize, version: u16) -> usize {
    if version == 1 {
        encoded_len
    } else {
        aligned(encoded_len)
    }
}

/// `len` rounded up to a multiple of [`ALIGN`].
pub(crate) const fn aligned(len: usize) -> usize {
    (len + ALIGN - 1) & !(ALIGN - 1)
}

/// Bytes a record with these key and value lengths takes in a version 2 segment, padding
/// included.
pub(crate) fn padded_len(key_len: usize, value_len: usize) -> usize {
    aligned(encoded_len(key_len, value_len))
}

/// Whether `header` (the bytes where a record would start) is all zeros: the end of the
/// records of a version 2 segment. No valid record starts with a zero header (its checksum
/// would not match).
pub(crate) fn is_end(header: &[u8]) -> bool {
    header.iter().all(|&b| b == 0)
}

/// Appends one encoded record to `out`, padded with zeros to a multiple of [`ALIGN`].
pub(crate) fn encode_into(out: &mut Vec<u8>, flags: u8, expires_at: u64, key: &[u8], value: &[u8]) {
    let start = out.len();
    out.resize(start + padded_len(key.len(), value.len()), 0);
    encode_to(&mut out[start..], flags, expires_at, key, value);
}

/// Writes one encoded record at the start of `out` and zeros the padding after it, up to
/// [`padded_len`] bytes; `out` must be at least that long.
pub(crate) fn encode_to(out: &mut [u8], flags: u8, expires_at: u64, key: &[u8], value: &[u8]) {
    debug_assert!(key.len() <= MAX_KEY_LEN && value.len() <= MAX_VALUE_LEN);
    let len = encoded_len(key.len(), value.len());
    let out = &mut out[..aligned(len)];
    out[4] = flags;
    out[5..13].copy_from_slice(&expires_at.to_le_bytes());
    out[13..17].copy_from_slice(&(key.len() as u32).to_le_bytes());
    out[17..21].copy_from_slice(&(value.len() as u32).to_le_bytes());
    out[RECORD_HEADER_LEN..RECORD_HEADER_LEN + key.len()].copy_from_slice(key);
    out[RECORD_HEADER_LEN + key.len()..len].copy_from_slice(value);
    out[len..].fill(0);
    let crc = crc32fast::hash(&out[4..len]);
    out[..4].copy_from_slice(&crc.to_le_bytes());
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"))
}

/// Decodes and fully validates the record at the start of `buf`. Lengths are checked against
/// the format limits and the buffer before anything is sliced, so corrupt lengths cannot cause
/// a large allocation or an out-of-bounds access.
pub(crate) fn decode(buf: &[u8]) -> Result<Record<'_>, DecodeError> {
    if buf.len() < RECORD_HEADER_LEN {
        return Err(DecodeError::Truncated);
    }
    let flags = buf[4];
    let expires_at = u64_at(buf, 5);
    let key_len = u32_at(buf, 13) as usize;
    let value_len = u32_at(buf, 17) as usize;
    // Version 1 allowed values up to 1 GiB; they are still read.
    if key_len > MAX_KEY_LEN || value_len > 1 << 30 {
        return Err(DecodeError::Invalid("length beyond the format limit"));
    }
    let total = encoded_len(key_len, value_len);
    if buf.len() < total {
        return Err(DecodeError::Truncated);
    }
    if crc32fast::hash(&buf[4..total]) != u32_at(buf, 0) {
        return Err(DecodeError::Invalid("checksum mismatch"));
    }
    if flags & !KNOWN_FLAGS != 0 {
        return Err(DecodeError::Invalid("unknown record flags"));
    }
    if flags & FLAG_TOMBSTONE != 0 && value_len != 0 {
        return Err(DecodeError::Invalid("tombstone with a value"));
    }
    let key = &buf[RECORD_HEADER_LEN..RECORD_HEADER_LEN + key_len];
    Ok(Record {
        flags,
        expires_at,
        key,
        value: &buf[RECORD_HEADER_LEN + key_len..total],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(flags: u8, expires_at: u64, key: &[u8], value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_into(&mut out, flags, expires_at, key, value);
        out
    }

    #[test]
    fn round_trip() {
        let buf = encoded(0, 42, b"key", b"value");
        assert_eq!(buf.len(), padded_len(3, 5));
        assert_eq!(buf.len() % ALIGN, 0);
        assert!(
            buf[encoded_len(3, 5)..].iter().all(|&b| b == 0),
            "zero padding"
        );
        let rec = decode(&buf).unwrap();
        assert_eq!(rec.key, b"key");
        assert_eq!(rec.value, b"value");
        assert_eq!(rec.expires_at, 42);
        assert!(!rec.is_tombstone());
        assert_eq!(rec.encoded_len(), encoded_len(3, 5));
        assert!(!is_end(&buf[..RECORD_HEADER_LEN]));
        assert!(is_end(&[0; RECORD_HEADER_LEN]));
    }

    #[test]
    fn decodes_only_the_first_record_of_a_longer_buffer() {
        let mut buf = encoded(FLAG_TOMBSTONE, 0, b"gone", b"");
        encode_into(&mut buf, 0, 0, b"next", b"v");
        let rec = decode(&buf).unwrap();
        assert!(rec.is_tombstone());
        assert_eq!(rec.key, b"gone");
        assert_eq!(rec.encoded_len(), encoded_len(4, 0));
    }

    #[test]
    fn every_truncation_is_detected() {
        let buf = encoded(0, 0, b"key", b"some value");
        for cut in 0..encoded_len(3, 10) {
            assert_eq!(
                decode(&buf[..cut]),
                Err(DecodeError::Truncated),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn every_bit_flip_is_detected() {
        let buf = encoded(0, 7, b"key", b"some value");
        for byte in 0..encoded_len(3, 10) {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[byte] ^= 1 << bit;
                match decode(&bad) {
                    Err(_) => {}
                    Ok(rec) => panic!("flip at {byte}:{bit} decoded as {rec:?}"),
                }
            }
        }
    }

    #[test]
    fn huge_lengths_are_rejected_before_use() {
        let mut buf = encoded(0, 0, b"k", b"v");
        buf[17..21].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            decode(&buf),
            Err(DecodeError::Invalid("length beyond the format limit"))
        );
    }

    #[test]
    fn unknown_flags_and_tombstones_with_values_are_rejected() {
        let buf = encoded(0x80, 0, b"k", b"v");
        assert_eq!(
            decode(&buf),
            Err(DecodeError::Invalid("unknown record flags"))
        );
        let buf = encoded(FLAG_TOMBSTONE, 0, b"k", b"v");
        assert_eq!(
            decode(&buf),
            Err(DecodeError::Invalid("tombstone with a value"))
        );
    }
}
