//! The deserializer: the format's bytes to any serde type. Every read is bounds-checked, every
//! length is checked against the bytes left, and nesting is limited, so hostile bytes give an
//! error, never a panic, an unbounded allocation or a stack overflow.

use serde::de::{self, DeserializeSeed, Visitor};

use super::{CodecError, MAX_DEPTH, ext, marker as m};

/// Reads one value of the format from a byte slice. Public so that tools (the CLI) can turn
/// stored bytes into any serde type, `serde_json::Value` included.
pub struct Decoder<'de> {
    input: &'de [u8],
    pos: usize,
    depth: u32,
    /// Field and variant names are handed over as bytes, without checking they are UTF-8
    /// (see [`super::decode`]).
    names_as_bytes: bool,
}

/// What a marker byte introduces.
pub(super) enum Item<'de> {
    Nil,
    Bool(bool),
    Uint(u64),
    Int(i64),
    F32(f32),
    F64(f64),
    Str(&'de [u8]),
    Bin(&'de [u8]),
    Array(usize),
    Map(usize),
    Ext(i8, &'de [u8]),
}

impl<'de> Decoder<'de> {
    /// A decoder at the start of `input`.
    pub fn new(input: &'de [u8]) -> Decoder<'de> {
        Decoder {
            input,
            pos: 0,
            depth: 0,
            names_as_bytes: false,
        }
    }

    /// A decoder that hands field and variant names to the visitor as bytes (what serde's
    /// derived visitors take as well as strings), saving the UTF-8 check of each. A visitor
    /// that wants strings only fails; decode again with [`Decoder::new`] then.
    pub(super) fn names_as_bytes(input: &'de [u8]) -> Decoder<'de> {
        Decoder {
            names_as_bytes: true,
            ..Decoder::new(input)
        }
    }

    /// Bytes read so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Skips one value; returns the bytes it took.
    pub fn skip_value(&mut self) -> Result<&'de [u8], CodecError> {
        let start = self.pos;
        self.skip()?;
        Ok(&self.input[start..self.pos])
    }

    /// Fails unless every byte was read.
    pub fn end(&self) -> Result<(), CodecError> {
        if self.pos == self.input.len() {
            Ok(())
        } else {
            Err(CodecError::new(format!(
                "{} bytes left over after the value",
                self.input.len() - self.pos
            )))
        }
    }

    pub(super) fn error(&self, what: impl std::fmt::Display) -> CodecError {
        CodecError::new(format!("{what} at byte {}", self.pos))
    }

    #[inline]
    fn take(&mut self, n: usize) -> Result<&'de [u8], CodecError> {
        match self.input.get(self.pos..self.pos + n) {
            Some(bytes) => {
                self.pos += n;
                Ok(bytes)
            }
            None => Err(self.cut_short(n)),
        }
    }

    #[cold]
    fn cut_short(&self, n: usize) -> CodecError {
        self.error(format!(
            "value cut short: {n} bytes needed, {} left",
            self.input.len() - self.pos
        ))
    }

    #[inline]
    fn byte(&mut self) -> Result<u8, CodecError> {
        match self.input.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                Ok(b)
            }
            None => Err(self.cut_short(1)),
        }
    }

    #[inline]
    fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        Ok(self.take(N)?.try_into().expect("take returned N bytes"))
    }

    fn len_u8(&mut self) -> Result<usize, CodecError> {
        Ok(usize::from(self.byte()?))
    }

    fn len_u16(&mut self) -> Result<usize, CodecError> {
        Ok(usize::from(u16::from_be_bytes(self.array()?)))
    }

    fn len_u32(&mut self) -> Result<usize, CodecError> {
        usize::try_from(u32::from_be_bytes(self.array()?)).map_err(|_| self.error("length"))
    }

    /// A container's claimed entry count, refused if the bytes left could not hold that many
    /// entries (each takes at least one byte, a map entry two).
    #[inline]
    fn count(&self, claimed: usize, per_entry: usize) -> Result<usize, CodecError> {
        let left = self.input.len() - self.pos;
        if claimed.saturating_mul(per_entry) > left {
            return Err(self.error(format!(
                "a container claims {claimed} entries with {left} bytes left"
            )));
        }
        Ok(claimed)
    }

    #[inline]
    fn peek(&self) -> Result<u8, CodecError> {
        self.input
            .get(self.pos)
            .copied()
            .ok_or_else(|| self.error("value cut short: a value was expected"))
    }

    /// Reads the next item's marker and header (not the contents of arrays and maps).
    #[inline]
    pub(super) fn item(&mut self) -> Result<Item<'de>, CodecError> {
        // The one-byte forms, which most small values are made of, here; the others apart.
        let marker = self.peek()?;
        let item = match marker {
            0x00..=m::POS_FIXINT_MAX => Item::Uint(u64::from(marker)),
            m::FIXMAP..=0x8f => {
                self.pos += 1;
                return Ok(Item::Map(self.count(usize::from(marker & 0x0f), 2)?));
            }
            m::FIXARRAY..=0x9f => {
                self.pos += 1;
                return Ok(Item::Array(self.count(usize::from(marker & 0x0f), 1)?));
            }
            m::FIXSTR..=0xbf => {
                let len = usize::from(marker & 0x1f);
                let bytes = self
                    .input
                    .get(self.pos + 1..self.pos + 1 + len)
                    .ok_or_else(|| self.cut_short(1 + len))?;
                self.pos += 1 + len;
                return Ok(Item::Str(bytes));
            }
            m::NIL => Item::Nil,
            m::FALSE => Item::Bool(false),
            m::TRUE => Item::Bool(true),
            m::NEG_FIXINT_MIN..=0xff => Item::Int(i64::from(marker as i8)),
            _ => return self.long_item(),
        };
        self.pos += 1;
        Ok(item)
    }

    /// [`item`](Decoder::item) for markers followed by lengths or fixed-size data.
    #[inline(never)]
    fn long_item(&mut self) -> Result<Item<'de>, CodecError> {
        let at = self.pos;
        let marker = self.byte()?;
        Ok(match marker {
            0x00..=m::POS_FIXINT_MAX => Item::Uint(u64::from(marker)),
            m::FIXMAP..=0x8f => Item::Map(self.count(usize::from(marker & 0x0f), 2)?),
            m::FIXARRAY..=0x9f => Item::Array(self.count(usize::from(marker & 0x0f), 1)?),
            m::FIXSTR..=0xbf => Item::Str(self.take(usize::from(marker & 0x1f))?),
            m::NIL => Item::Nil,
            m::FALSE => Item::Bool(false),
            m::TRUE => Item::Bool(true),
            m::BIN8 => {
                let n = self.len_u8()?;
                Item::Bin(self.take(n)?)
            }
            m::BIN16 => {
                let n = self.len_u16()?;
                Item::Bin(self.take(n)?)
            }
            m::BIN32 => {
                let n = self.len_u32()?;
                Item::Bin(self.take(n)?)
            }
            m::EXT8 | m::EXT16 | m::EXT32 => {
                let n = match marker {
                    m::EXT8 => self.len_u8()?,
                    m::EXT16 => self.len_u16()?,
                    _ => self.len_u32()?,
                };
                let ty = self.byte()? as i8;
                Item::Ext(ty, self.take(n)?)
            }
            m::FLOAT32 => Item::F32(f32::from_be_bytes(self.array()?)),
            m::FLOAT64 => Item::F64(f64::from_be_bytes(self.array()?)),
            m::UINT8 => Item::Uint(u64::from(self.byte()?)),
            m::UINT16 => Item::Uint(u64::from(u16::from_be_bytes(self.array()?))),
            m::UINT32 => Item::Uint(u64::from(u32::from_be_bytes(self.array()?))),
            m::UINT64 => Item::Uint(u64::from_be_bytes(self.array()?)),
            m::INT8 => Item::Int(i64::from(self.byte()? as i8)),
            m::INT16 => Item::Int(i64::from(i16::from_be_bytes(self.array()?))),
            m::INT32 => Item::Int(i64::from(i32::from_be_bytes(self.array()?))),
            m::INT64 => Item::Int(i64::from_be_bytes(self.array()?)),
            m::FIXEXT1 | m::FIXEXT2 | m::FIXEXT4 | m::FIXEXT8 | m::FIXEXT16 => {
                let n = 1usize << (marker - m::FIXEXT1);
                let ty = self.byte()? as i8;
                Item::Ext(ty, self.take(n)?)
            }
            m::STR8 => {
                let n = self.len_u8()?;
                Item::Str(self.take(n)?)
            }
            m::STR16 => {
                let n = self.len_u16()?;
                Item::Str(self.take(n)?)
            }
            m::STR32 => {
                let n = self.len_u32()?;
                Item::Str(self.take(n)?)
            }
            m::ARRAY16 => {
                let n = self.len_u16()?;
                Item::Array(self.count(n, 1)?)
            }
            m::ARRAY32 => {
                let n = self.len_u32()?;
                Item::Array(self.count(n, 1)?)
            }
            m::MAP16 => {
                let n = self.len_u16()?;
                Item::Map(self.count(n, 2)?)
            }
            m::MAP32 => {
                let n = self.len_u32()?;
                Item::Map(self.count(n, 2)?)
            }
            m::NEG_FIXINT_MIN..=0xff => Item::Int(i64::from(marker as i8)),
            0xc1 => {
                self.pos = at;
                return Err(self.error("marker 0xc1 (never used)"));
            }
        })
    }

    #[inline]
    pub(super) fn str(&self, bytes: &'de [u8]) -> Result<&'de str, CodecError> {
        std::str::from_utf8(bytes).map_err(|_| self.error("a string that is not UTF-8"))
    }

    #[inline]
    pub(super) fn enter(&mut self) -> Result<(), CodecError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error(format!("nesting deeper than {MAX_DEPTH} levels")));
        }
        Ok(())
    }

    #[inline]
    pub(super) fn leave(&mut self) {
        debug_assert!(self.depth > 0);
        self.depth -= 1;
    }

    /// A decoder over extension data, one level deeper.
    pub(super) fn nested(&self, data: &'de [u8]) -> Result<Decoder<'de>, CodecError> {
        let mut sub = Decoder {
            input: data,
            pos: 0,
            depth: self.depth,
            names_as_bytes: self.names_as_bytes,
        };
        sub.enter()?;
        Ok(sub)
    }

    fn visit_seq<V: Visitor<'de>>(
        &mut self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, CodecError> {
        self.visit_entries(len, "an array", |access| visitor.visit_seq(access))
    }

    fn visit_map<V: Visitor<'de>>(
        &mut self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, CodecError> {
        self.visit_entries(len, "a map", |access| visitor.visit_map(access))
    }

    /// Hands the `len` entries of an array or map to `visit`, one level deeper, and checks
    /// that it read them all (a shorter type reading a longer value is an error, not a
    /// misread).
    fn visit_entries<R>(
        &mut self,
        len: usize,
        what: &str,
        visit: impl FnOnce(&mut Entries<'_, 'de>) -> Result<R, CodecError>,
    ) -> Result<R, CodecError> {
        self.enter()?;
        let mut access = Entries {
            de: self,
            left: len,
        };
        let value = visit(&mut access)?;
        if access.left != 0 {
            return Err(self.error(format!("{what} of {len} entries was read as a shorter one")));
        }
        self.leave();
        Ok(value)
    }

    fn visit_ext<V: Visitor<'de>>(
        &mut self,
        ty: i8,
        data: &'de [u8],
        visitor: V,
    ) -> Result<V::Value, CodecError> {
        match ty {
            ext::SOME => {
                let mut sub = self.nested(data)?;
                let value = visitor.visit_some(&mut sub)?;
                sub.end()?;
                Ok(value)
            }
            ext::I128 if data.len() == 16 => {
                visitor.visit_i128(i128::from_be_bytes(data.try_into().expect("16 bytes")))
            }
            ext::U128 if data.len() == 16 => {
                visitor.visit_u128(u128::from_be_bytes(data.try_into().expect("16 bytes")))
            }
            _ => Err(self.error(format!(
                "extension type {ty} of {} bytes is not part of the format",
                data.len()
            ))),
        }
    }

    /// Skips one value without building it.
    fn skip(&mut self) -> Result<(), CodecError> {
        match self.item()? {
            Item::Array(n) => {
                self.enter()?;
                for _ in 0..n {
                    self.skip()?;
                }
                self.leave();
            }
            Item::Map(n) => {
                self.enter()?;
                for _ in 0..2 * n {
                    self.skip()?;
                }
                self.leave();
            }
            _ => {}
        }
        Ok(())
    }
}

impl<'de> de::Deserializer<'de> for &mut Decoder<'de> {
    type Error = CodecError;

    fn is_human_readable(&self) -> bool {
        false
    }

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        match self.item()? {
            Item::Nil => visitor.visit_unit(),
            Item::Bool(b) => visitor.visit_bool(b),
            Item::Uint(n) => visitor.visit_u64(n),
            Item::Int(n) => visitor.visit_i64(n),
            Item::F32(x) => visitor.visit_f32(x),
            Item::F64(x) => visitor.visit_f64(x),
            Item::Str(s) => visitor.visit_borrowed_str(self.str(s)?),
            Item::Bin(b) => visitor.visit_borrowed_bytes(b),
            Item::Array(n) => self.visit_seq(n, visitor),
            Item::Map(n) => self.visit_map(n, visitor),
            Item::Ext(ty, data) => self.visit_ext(ty, data, visitor),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        match self.peek()? {
            m::NIL => {
                self.pos += 1;
                visitor.visit_none()
            }
            m::FIXEXT1..=m::FIXEXT16 | m::EXT8 | m::EXT16 | m::EXT32 => {
                let at = self.pos;
                match self.item()? {
                    Item::Ext(ext::SOME, data) => self.visit_ext(ext::SOME, data, visitor),
                    _ => {
                        // Another extension (a 128-bit integer): a `Some` of it.
                        self.pos = at;
                        self.enter()?;
                        let value = visitor.visit_some(&mut *self)?;
                        self.leave();
                        Ok(value)
                    }
                }
            }
            _ => {
                self.enter()?;
                let value = visitor.visit_some(&mut *self)?;
                self.leave();
                Ok(value)
            }
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, CodecError> {
        match self.item()? {
            Item::Str(s) => {
                let variant = self.str(s)?;
                visitor.visit_enum(UnitVariant { variant })
            }
            Item::Map(1) => {
                self.enter()?;
                let value = visitor.visit_enum(&mut *self)?;
                self.leave();
                Ok(value)
            }
            _ => Err(self.error(
                "an enum variant was expected (a name, or a map of one entry from name to content)",
            )),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, CodecError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        self.skip()?;
        visitor.visit_unit()
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        if self.names_as_bytes
            && let Some(marker @ m::FIXSTR..=0xbf) = self.input.get(self.pos).copied()
        {
            let len = usize::from(marker & 0x1f);
            let name = self
                .input
                .get(self.pos + 1..self.pos + 1 + len)
                .ok_or_else(|| self.cut_short(1 + len))?;
            self.pos += 1 + len;
            return visitor.visit_borrowed_bytes(name);
        }
        de::Deserializer::deserialize_any(self, visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map struct
    }
}

/// The elements of an array, or the entries of a map.
struct Entries<'a, 'de> {
    de: &'a mut Decoder<'de>,
    left: usize,
}

impl<'de> de::SeqAccess<'de> for Entries<'_, 'de> {
    type Error = CodecError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, CodecError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.de).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

impl<'de> de::MapAccess<'de> for Entries<'_, 'de> {
    type Error = CodecError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, CodecError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.de).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, CodecError> {
        seed.deserialize(&mut *self.de)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

/// `{variant: content}`: the decoder sits on the variant's name.
impl<'de> de::EnumAccess<'de> for &mut Decoder<'de> {
    type Error = CodecError;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self), CodecError> {
        let variant = seed.deserialize(&mut *self)?;
        Ok((variant, self))
    }
}

impl<'de> de::VariantAccess<'de> for &mut Decoder<'de> {
    type Error = CodecError;

    fn unit_variant(self) -> Result<(), CodecError> {
        match self.item()? {
            Item::Nil => Ok(()),
            _ => Err(self.error("a unit variant has no content")),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<T::Value, CodecError> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, CodecError> {
        de::Deserializer::deserialize_any(self, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, CodecError> {
        de::Deserializer::deserialize_any(self, visitor)
    }
}

/// A unit variant, written as its bare name.
struct UnitVariant<'de> {
    variant: &'de str,
}

impl<'de> de::EnumAccess<'de> for UnitVariant<'de> {
    type Error = CodecError;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self), CodecError> {
        let name = seed.deserialize(de::value::BorrowedStrDeserializer::<CodecError>::new(
            self.variant,
        ))?;
        Ok((name, self))
    }
}

impl<'de> de::VariantAccess<'de> for UnitVariant<'de> {
    type Error = CodecError;

    fn unit_variant(self) -> Result<(), CodecError> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(
        self,
        _seed: T,
    ) -> Result<T::Value, CodecError> {
        Err(self.has_no_content())
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        _len: usize,
        _visitor: V,
    ) -> Result<V::Value, CodecError> {
        Err(self.has_no_content())
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, CodecError> {
        Err(self.has_no_content())
    }
}

impl UnitVariant<'_> {
    fn has_no_content(&self) -> CodecError {
        CodecError::new(format!(
            "variant {} was stored without content, as a unit variant",
            self.variant
        ))
    }
}
