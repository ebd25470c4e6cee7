//! The value and key encoding of the typed cache: self-describing, so any serde type round
//! trips and a value read as the wrong shape fails instead of being misread.
//!
//! The bytes are MessagePack (any MessagePack reader can read them), written by logcache's own
//! serializer because two things no MessagePack crate does are needed here:
//!
//! - **`Some` is never lost**: `Some(x)`, where `x` itself encodes as `nil` (`Some(None)`,
//!   `Some(())`) or as such a wrapper, is wrapped in extension type 1, so `Option<Option<T>>`
//!   round trips (MessagePack, JSON and CBOR encoders turn `Some(None)` into `None`).
//! - **Keys are canonical** ([`encode_key`]): map entries and struct fields are sorted by their
//!   encoded key, and the elements of a `HashSet` by their encoding, so equal keys encode to
//!   equal bytes whatever the iteration order of a hash-based collection.
//!
//! Structs are maps keyed by field name and enums are externally tagged (as in JSON), so the
//! serde attributes that need a self-describing format (`untagged`, `tag = "..."`,
//! `flatten`, `skip_serializing_if`) and `serde_json::Value` work. docs/format.md has the
//! byte-level description.

mod bincode;
mod de;
mod ser;
mod text;

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub(crate) use self::bincode::decode_bincode;
#[cfg(test)]
pub(crate) use self::bincode::encode_bincode;
pub use de::Decoder;
pub use text::to_json;

/// Values and keys nest at most this deep (a guard against stack overflow on hostile input;
/// serde_json allows 128 too). Encoding refuses what decoding could not read back.
pub const MAX_DEPTH: u32 = 128;

/// MessagePack markers used by the format.
pub(crate) mod marker {
    pub const POS_FIXINT_MAX: u8 = 0x7f;
    pub const FIXMAP: u8 = 0x80;
    pub const FIXARRAY: u8 = 0x90;
    pub const FIXSTR: u8 = 0xa0;
    pub const NIL: u8 = 0xc0;
    pub const FALSE: u8 = 0xc2;
    pub const TRUE: u8 = 0xc3;
    pub const BIN8: u8 = 0xc4;
    pub const BIN16: u8 = 0xc5;
    pub const BIN32: u8 = 0xc6;
    pub const EXT8: u8 = 0xc7;
    pub const EXT16: u8 = 0xc8;
    pub const EXT32: u8 = 0xc9;
    pub const FLOAT32: u8 = 0xca;
    pub const FLOAT64: u8 = 0xcb;
    pub const UINT8: u8 = 0xcc;
    pub const UINT16: u8 = 0xcd;
    pub const UINT32: u8 = 0xce;
    pub const UINT64: u8 = 0xcf;
    pub const INT8: u8 = 0xd0;
    pub const INT16: u8 = 0xd1;
    pub const INT32: u8 = 0xd2;
    pub const INT64: u8 = 0xd3;
    pub const FIXEXT1: u8 = 0xd4;
    pub const FIXEXT2: u8 = 0xd5;
    pub const FIXEXT4: u8 = 0xd6;
    pub const FIXEXT8: u8 = 0xd7;
    pub const FIXEXT16: u8 = 0xd8;
    pub const STR8: u8 = 0xd9;
    pub const STR16: u8 = 0xda;
    pub const STR32: u8 = 0xdb;
    pub const ARRAY16: u8 = 0xdc;
    pub const ARRAY32: u8 = 0xdd;
    pub const MAP16: u8 = 0xde;
    pub const MAP32: u8 = 0xdf;
    pub const NEG_FIXINT_MIN: u8 = 0xe0;
}

/// MessagePack extension types of the format (application types 0–127).
pub(crate) mod ext {
    /// `Some(x)` where `x` alone would read as `None`: the data is `x`'s encoding.
    pub const SOME: i8 = 1;
    /// An `i128` outside the `i64` range: 16 bytes, big-endian two's complement.
    pub const I128: i8 = 2;
    /// A `u128` outside the `u64` range: 16 bytes, big-endian.
    pub const U128: i8 = 3;
}

/// Why a value could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecError(Box<str>);

impl CodecError {
    /// An error saying `message`. (A boxed `str`: a `Result<(), CodecError>` is two words,
    /// returned in registers by every step of encoding and decoding.)
    pub(crate) fn new(message: String) -> CodecError {
        CodecError(message.into_boxed_str())
    }
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CodecError {}

impl serde::ser::Error for CodecError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        CodecError::new(msg.to_string())
    }
}

impl serde::de::Error for CodecError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        CodecError::new(msg.to_string())
    }
}

/// Appends the encoding of `value` to `out`. On error `out` may hold a partial encoding after
/// its original length.
pub fn encode_value_into<T: Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    ser::encode(value, out, false)
}

/// The encoding of `value`.
pub fn encode_value<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    encode_value_into(value, &mut out)?;
    Ok(out)
}

/// Appends the canonical encoding of `key` to `out`: equal keys give equal bytes, whatever the
/// iteration order of the maps and hash sets inside them.
pub(crate) fn encode_key_into<T: Serialize + ?Sized>(
    key: &T,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    ser::encode(key, out, true)
}

/// Appends `v` as a MessagePack integer (what `encode_key_into(&v)` writes).
#[inline]
pub(crate) fn write_uint(v: u64, out: &mut Vec<u8>) {
    ser::write_uint(v, out);
}

/// Appends the header of an array of `len` elements.
#[inline]
pub(crate) fn write_array_header(len: usize, out: &mut Vec<u8>) -> Result<(), CodecError> {
    ser::container_header(ser::Kind::Array, len, out)
}

/// The canonical encoding of `key` (see [`encode_key_into`]).
pub fn encode_key<T: Serialize + ?Sized>(key: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    encode_key_into(key, &mut out)?;
    Ok(out)
}

/// Decodes a `T` that must span all of `bytes`. Any type can be asked for: the bytes say what
/// they hold, so `serde_json::Value` reads anything.
///
/// Field and variant names are first handed to `T`'s visitors as bytes, unchecked (serde's
/// derived visitors compare them with their names either way, and checking that each is
/// UTF-8 is most of the cost of decoding a small struct); only if that fails is the value
/// decoded again with every name checked, for types whose visitors take strings only.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let decode_with = |mut decoder: Decoder<'_>| {
        let value = T::deserialize(&mut decoder)?;
        decoder.end()?;
        Ok(value)
    };
    decode_with(Decoder::names_as_bytes(bytes)).or_else(|_| decode_with(Decoder::new(bytes)))
}

#[cfg(test)]
mod tests;
