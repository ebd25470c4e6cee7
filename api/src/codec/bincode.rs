//! bincode 2 over serde, for the counters file of format version 1 caches, read once when it
//! is folded into the engine's counters. Values and keys use the self-describing format
//! (`super`).

use serde::de::DeserializeOwned;

/// Decoding never claims more than this many bytes, so a damaged length cannot make it
/// allocate without bound.
const DECODE_LIMIT: usize = 1 << 30;

fn config() -> impl ::bincode::config::Config {
    ::bincode::config::standard().with_limit::<DECODE_LIMIT>()
}

/// Encodes `value`.
#[cfg(test)]
pub(crate) fn encode_bincode<T: serde::Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, String> {
    ::bincode::serde::encode_to_vec(value, config()).map_err(|e| e.to_string())
}

/// Decodes a `T` that must span all of `bytes`.
pub(crate) fn decode_bincode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let (value, read) =
        ::bincode::serde::decode_from_slice::<T, _>(bytes, config()).map_err(|e| e.to_string())?;
    if read != bytes.len() {
        return Err(format!(
            "{} bytes left over after the value",
            bytes.len() - read
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_left_over_bytes() {
        let bytes = encode_bincode(&("name", 42u32)).unwrap();
        assert_eq!(
            decode_bincode::<(String, u32)>(&bytes).unwrap(),
            ("name".into(), 42)
        );
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_bincode::<(String, u32)>(&longer).is_err());
        assert!(decode_bincode::<(String, u32)>(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn a_huge_claimed_length_fails_without_allocating_it() {
        // A varint claiming a 2^62-byte string.
        let bytes = [0xFD, 0, 0, 0, 0, 0, 0, 0, 0x40];
        assert!(decode_bincode::<String>(&bytes).is_err());
        assert!(decode_bincode::<Vec<u64>>(&bytes).is_err());
    }
}
