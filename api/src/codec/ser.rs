//! The serializer: serde's data model to the format's bytes (see `super` and docs/format.md).

use serde::Serialize;
use serde::ser;

use super::{CodecError, MAX_DEPTH, ext, marker as m};

/// Appends `value` to `out`; `canonical` sorts maps, struct fields and hash sets (for keys).
pub(super) fn encode<T: Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
    canonical: bool,
) -> Result<(), CodecError> {
    let mut encoder = Encoder {
        out,
        canonical,
        depth: 0,
        current: "",
    };
    encoder.value(value)?;
    debug_assert_eq!(encoder.depth, 0, "every nesting level was left");
    Ok(())
}

struct Encoder<'a> {
    out: &'a mut Vec<u8>,
    canonical: bool,
    depth: u32,
    /// Canonical mode: the type name of the value being serialized, so that a sequence it
    /// starts is sorted if it is a hash set.
    current: &'static str,
}

/// Whether a type, by its name, is a hash set (std's or hashbrown's, also behind a reference,
/// `Box`, `Rc`, `Arc` or `Cow`): its iteration order is arbitrary, so its elements are sorted
/// in a key.
fn is_hash_set(mut name: &str) -> bool {
    if !name.contains("HashSet") {
        return false;
    }
    loop {
        let trimmed = name.trim_start_matches('&').trim_start_matches("mut ");
        let inner = [
            "alloc::boxed::Box<",
            "alloc::sync::Arc<",
            "alloc::rc::Rc<",
            "alloc::borrow::Cow<",
        ]
        .iter()
        .find_map(|pointer| trimmed.strip_prefix(pointer));
        match inner {
            Some(rest) => name = rest,
            None => {
                name = trimmed;
                break;
            }
        }
    }
    let base = name.split('<').next().unwrap_or(name);
    base.rsplit("::").next() == Some("HashSet")
}

fn too_long(what: &str, len: usize) -> CodecError {
    CodecError::new(format!(
        "{what} of {len} elements or bytes is too long to encode"
    ))
}

/// Appends `v` as a MessagePack integer in its smallest form.
#[inline]
pub(super) fn write_uint(v: u64, out: &mut Vec<u8>) {
    if v <= u64::from(m::POS_FIXINT_MAX) {
        out.push(v as u8);
    } else if let Ok(v) = u8::try_from(v) {
        out.extend_from_slice(&[m::UINT8, v]);
    } else if let Ok(v) = u16::try_from(v) {
        out.push(m::UINT16);
        out.extend_from_slice(&v.to_be_bytes());
    } else if let Ok(v) = u32::try_from(v) {
        out.push(m::UINT32);
        out.extend_from_slice(&v.to_be_bytes());
    } else {
        out.push(m::UINT64);
        out.extend_from_slice(&v.to_be_bytes());
    }
}

/// The header of an array or map of `len` entries.
#[inline]
pub(super) fn container_header(
    kind: Kind,
    len: usize,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    let (fix, b16, b32) = match kind {
        Kind::Array => (m::FIXARRAY, m::ARRAY16, m::ARRAY32),
        Kind::Map => (m::FIXMAP, m::MAP16, m::MAP32),
    };
    if len < 16 {
        out.push(fix | len as u8);
    } else if let Ok(n) = u16::try_from(len) {
        out.push(b16);
        out.extend_from_slice(&n.to_be_bytes());
    } else if let Ok(n) = u32::try_from(len) {
        out.push(b32);
        out.extend_from_slice(&n.to_be_bytes());
    } else {
        return Err(too_long("a sequence or map", len));
    }
    Ok(())
}

/// The header of extension data of `len` bytes and type `ty`.
fn ext_header(len: usize, ty: i8, out: &mut Vec<u8>) -> Result<(), CodecError> {
    match len {
        1 => out.push(m::FIXEXT1),
        2 => out.push(m::FIXEXT2),
        4 => out.push(m::FIXEXT4),
        8 => out.push(m::FIXEXT8),
        16 => out.push(m::FIXEXT16),
        _ => {
            if let Ok(n) = u8::try_from(len) {
                out.push(m::EXT8);
                out.push(n);
            } else if let Ok(n) = u16::try_from(len) {
                out.push(m::EXT16);
                out.extend_from_slice(&n.to_be_bytes());
            } else if let Ok(n) = u32::try_from(len) {
                out.push(m::EXT32);
                out.extend_from_slice(&n.to_be_bytes());
            } else {
                return Err(too_long("an extension", len));
            }
        }
    }
    out.push(ty as u8);
    Ok(())
}

/// Whether `encoded` (one value) would read as `None` or as a `Some` wrapper, so that a `Some`
/// around it must be written out.
fn needs_some_wrapper(encoded: &[u8]) -> bool {
    let type_at = match encoded.first() {
        Some(&m::NIL) => return encoded.len() == 1,
        Some(&(m::FIXEXT1 | m::FIXEXT2 | m::FIXEXT4 | m::FIXEXT8 | m::FIXEXT16)) => 1,
        Some(&m::EXT8) => 2,
        Some(&m::EXT16) => 3,
        Some(&m::EXT32) => 5,
        _ => return false,
    };
    encoded.get(type_at) == Some(&(ext::SOME as u8))
}

impl<'a> Encoder<'a> {
    /// Serializes a nested value (in canonical mode, noting its type: see `current`).
    #[inline]
    fn value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), CodecError> {
        if self.canonical {
            self.current = std::any::type_name::<T>();
        }
        v.serialize(&mut *self)
    }

    fn enter(&mut self) -> Result<(), CodecError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(CodecError::new(format!(
                "the value nests deeper than {MAX_DEPTH} levels"
            )));
        }
        Ok(())
    }

    fn leave(&mut self) {
        debug_assert!(self.depth > 0);
        self.depth -= 1;
    }

    #[inline]
    fn uint(&mut self, v: u64) {
        write_uint(v, self.out);
    }

    #[inline]
    fn int(&mut self, v: i64) {
        if v >= 0 {
            self.uint(v as u64);
        } else if v >= -32 {
            self.out.push(v as i8 as u8);
        } else if let Ok(v) = i8::try_from(v) {
            self.out.extend_from_slice(&[m::INT8, v as u8]);
        } else if let Ok(v) = i16::try_from(v) {
            self.out.push(m::INT16);
            self.out.extend_from_slice(&v.to_be_bytes());
        } else if let Ok(v) = i32::try_from(v) {
            self.out.push(m::INT32);
            self.out.extend_from_slice(&v.to_be_bytes());
        } else {
            self.out.push(m::INT64);
            self.out.extend_from_slice(&v.to_be_bytes());
        }
    }

    #[inline]
    fn str(&mut self, s: &str) -> Result<(), CodecError> {
        let len = s.len();
        if len < 32 {
            self.out.reserve(1 + len);
            self.out.push(m::FIXSTR | len as u8);
            self.out.extend_from_slice(s.as_bytes());
            return Ok(());
        }
        self.long_str(s)
    }

    /// [`str`](Encoder::str) of 32 bytes or more.
    fn long_str(&mut self, s: &str) -> Result<(), CodecError> {
        let len = s.len();
        if let Ok(n) = u8::try_from(len) {
            self.out.extend_from_slice(&[m::STR8, n]);
        } else if let Ok(n) = u16::try_from(len) {
            self.out.push(m::STR16);
            self.out.extend_from_slice(&n.to_be_bytes());
        } else if let Ok(n) = u32::try_from(len) {
            self.out.push(m::STR32);
            self.out.extend_from_slice(&n.to_be_bytes());
        } else {
            return Err(too_long("a string", len));
        }
        self.out.extend_from_slice(s.as_bytes());
        Ok(())
    }

    fn bin(&mut self, b: &[u8]) -> Result<(), CodecError> {
        let len = b.len();
        if let Ok(n) = u8::try_from(len) {
            self.out.extend_from_slice(&[m::BIN8, n]);
        } else if let Ok(n) = u16::try_from(len) {
            self.out.push(m::BIN16);
            self.out.extend_from_slice(&n.to_be_bytes());
        } else if let Ok(n) = u32::try_from(len) {
            self.out.push(m::BIN32);
            self.out.extend_from_slice(&n.to_be_bytes());
        } else {
            return Err(too_long("a byte string", len));
        }
        self.out.extend_from_slice(b);
        Ok(())
    }

    /// Starts an array or map of `len` entries (0 if unknown: the header is fixed at the end).
    /// `sorted`: in canonical mode, the entries are sorted by their encoding at the end.
    #[inline]
    fn compound<'e>(
        &'e mut self,
        kind: Kind,
        len: Option<usize>,
        sorted: bool,
    ) -> Result<Compound<'e, 'a>, CodecError> {
        self.enter()?;
        let header_at = self.out.len();
        let declared = len.unwrap_or(0);
        container_header(kind, declared, self.out)?;
        let header_len = self.out.len() - header_at;
        Ok(Compound {
            spans: (sorted && self.canonical).then(Vec::new),
            enc: self,
            kind,
            header_at,
            header_len,
            declared,
            count: 0,
        })
    }

    /// `{variant: ...}`: the outer map of an externally tagged enum variant.
    fn variant_tag(&mut self, variant: &str) -> Result<(), CodecError> {
        self.out.push(m::FIXMAP | 1);
        self.str(variant)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Array,
    Map,
}

/// An array or map being written.
struct Compound<'e, 'a> {
    enc: &'e mut Encoder<'a>,
    kind: Kind,
    header_at: usize,
    header_len: usize,
    declared: usize,
    count: usize,
    /// Canonical mode, sorted: where each element or entry starts and where its key ends
    /// (for arrays, the element's start again).
    spans: Option<Vec<(usize, usize)>>,
}

impl Compound<'_, '_> {
    #[inline]
    fn element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), CodecError> {
        let start = self.enc.out.len();
        if let Some(spans) = &mut self.spans {
            spans.push((start, start));
        }
        self.count += 1;
        self.enc.value(v)
    }

    fn key<T: Serialize + ?Sized>(&mut self, k: &T) -> Result<(), CodecError> {
        let start = self.enc.out.len();
        self.count += 1;
        self.enc.value(k)?;
        if let Some(spans) = &mut self.spans {
            spans.push((start, self.enc.out.len()));
        }
        Ok(())
    }

    #[inline]
    fn value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), CodecError> {
        self.enc.value(v)
    }

    fn field<T: Serialize + ?Sized>(&mut self, name: &str, v: &T) -> Result<(), CodecError> {
        let start = self.enc.out.len();
        self.count += 1;
        self.enc.str(name)?;
        if let Some(spans) = &mut self.spans {
            spans.push((start, self.enc.out.len()));
        }
        self.enc.value(v)
    }

    #[inline]
    fn end(self) -> Result<(), CodecError> {
        let Compound {
            enc,
            kind,
            header_at,
            header_len,
            declared,
            count,
            spans,
        } = self;
        if let Some(spans) = spans {
            sort_entries(enc.out, kind, &spans);
        }
        if count != declared {
            // The length was unknown (or the Serialize impl miscounted): rewrite the header.
            let mut header = Vec::with_capacity(5);
            container_header(kind, count, &mut header)?;
            enc.out.splice(header_at..header_at + header_len, header);
        }
        enc.leave();
        Ok(())
    }
}

/// Sorts the entries that start at `spans` (and run to the next one, the last to the end of
/// `out`) by their key's encoding (for arrays, the whole element's), then the whole entry.
fn sort_entries(out: &mut [u8], kind: Kind, spans: &[(usize, usize)]) {
    let Some(&(first, _)) = spans.first() else {
        return;
    };
    let end = out.len();
    let mut entries: Vec<(&[u8], &[u8])> = spans
        .iter()
        .enumerate()
        .map(|(i, &(start, key_end))| {
            let stop = spans.get(i + 1).map_or(end, |next| next.0);
            let key_end = if kind == Kind::Array { stop } else { key_end };
            (&out[start..key_end], &out[start..stop])
        })
        .collect();
    entries.sort_unstable();
    let sorted: Vec<u8> = entries
        .iter()
        .flat_map(|(_, entry)| entry.iter().copied())
        .collect();
    debug_assert_eq!(sorted.len(), end - first);
    out[first..].copy_from_slice(&sorted);
}

impl<'e, 'a> ser::Serializer for &'e mut Encoder<'a> {
    type Ok = ();
    type Error = CodecError;
    type SerializeSeq = Compound<'e, 'a>;
    type SerializeTuple = Compound<'e, 'a>;
    type SerializeTupleStruct = Compound<'e, 'a>;
    type SerializeTupleVariant = Compound<'e, 'a>;
    type SerializeMap = Compound<'e, 'a>;
    type SerializeStruct = Compound<'e, 'a>;
    type SerializeStructVariant = Compound<'e, 'a>;

    fn is_human_readable(&self) -> bool {
        false
    }

    fn serialize_bool(self, v: bool) -> Result<(), CodecError> {
        self.out.push(if v { m::TRUE } else { m::FALSE });
        Ok(())
    }

    fn serialize_i8(self, v: i8) -> Result<(), CodecError> {
        self.int(v.into());
        Ok(())
    }

    fn serialize_i16(self, v: i16) -> Result<(), CodecError> {
        self.int(v.into());
        Ok(())
    }

    fn serialize_i32(self, v: i32) -> Result<(), CodecError> {
        self.int(v.into());
        Ok(())
    }

    fn serialize_i64(self, v: i64) -> Result<(), CodecError> {
        self.int(v);
        Ok(())
    }

    fn serialize_i128(self, v: i128) -> Result<(), CodecError> {
        match i64::try_from(v) {
            Ok(v) => self.int(v),
            Err(_) => {
                ext_header(16, ext::I128, self.out)?;
                self.out.extend_from_slice(&v.to_be_bytes());
            }
        }
        Ok(())
    }

    fn serialize_u8(self, v: u8) -> Result<(), CodecError> {
        self.uint(v.into());
        Ok(())
    }

    fn serialize_u16(self, v: u16) -> Result<(), CodecError> {
        self.uint(v.into());
        Ok(())
    }

    fn serialize_u32(self, v: u32) -> Result<(), CodecError> {
        self.uint(v.into());
        Ok(())
    }

    fn serialize_u64(self, v: u64) -> Result<(), CodecError> {
        self.uint(v);
        Ok(())
    }

    fn serialize_u128(self, v: u128) -> Result<(), CodecError> {
        match u64::try_from(v) {
            Ok(v) => self.uint(v),
            Err(_) => {
                ext_header(16, ext::U128, self.out)?;
                self.out.extend_from_slice(&v.to_be_bytes());
            }
        }
        Ok(())
    }

    fn serialize_f32(self, v: f32) -> Result<(), CodecError> {
        self.out.push(m::FLOAT32);
        self.out.extend_from_slice(&v.to_be_bytes());
        Ok(())
    }

    fn serialize_f64(self, v: f64) -> Result<(), CodecError> {
        self.out.push(m::FLOAT64);
        self.out.extend_from_slice(&v.to_be_bytes());
        Ok(())
    }

    fn serialize_char(self, v: char) -> Result<(), CodecError> {
        self.str(v.encode_utf8(&mut [0; 4]))
    }

    fn serialize_str(self, v: &str) -> Result<(), CodecError> {
        self.str(v)
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<(), CodecError> {
        self.bin(v)
    }

    fn serialize_none(self) -> Result<(), CodecError> {
        self.out.push(m::NIL);
        Ok(())
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), CodecError> {
        self.enter()?;
        let start = self.out.len();
        self.value(value)?;
        self.leave();
        if needs_some_wrapper(&self.out[start..]) {
            let mut header = Vec::with_capacity(6);
            ext_header(self.out.len() - start, ext::SOME, &mut header)?;
            self.out.splice(start..start, header);
        }
        Ok(())
    }

    fn serialize_unit(self) -> Result<(), CodecError> {
        self.out.push(m::NIL);
        Ok(())
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), CodecError> {
        self.out.push(m::NIL);
        Ok(())
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), CodecError> {
        self.str(variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), CodecError> {
        self.value(value)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), CodecError> {
        self.enter()?;
        self.variant_tag(variant)?;
        self.value(value)?;
        self.leave();
        Ok(())
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<Compound<'e, 'a>, CodecError> {
        // Every serialize call is made for the value `value()` last noted, or from within its
        // own `Serialize` impl: the type that starts this sequence.
        let sorted = self.canonical && is_hash_set(self.current);
        self.compound(Kind::Array, len, sorted)
    }

    fn serialize_tuple(self, len: usize) -> Result<Compound<'e, 'a>, CodecError> {
        self.compound(Kind::Array, Some(len), false)
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<Compound<'e, 'a>, CodecError> {
        self.compound(Kind::Array, Some(len), false)
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Compound<'e, 'a>, CodecError> {
        self.variant_tag(variant)?;
        self.compound(Kind::Array, Some(len), false)
    }

    fn serialize_map(self, len: Option<usize>) -> Result<Compound<'e, 'a>, CodecError> {
        self.compound(Kind::Map, len, true)
    }

    fn serialize_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<Compound<'e, 'a>, CodecError> {
        self.compound(Kind::Map, Some(len), true)
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Compound<'e, 'a>, CodecError> {
        self.variant_tag(variant)?;
        self.compound(Kind::Map, Some(len), true)
    }
}

impl ser::SerializeSeq for Compound<'_, '_> {
    type Ok = ();
    type Error = CodecError;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), CodecError> {
        self.element(value)
    }

    fn end(self) -> Result<(), CodecError> {
        Compound::end(self)
    }
}

impl ser::SerializeTuple for Compound<'_, '_> {
    type Ok = ();
    type Error = CodecError;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), CodecError> {
        self.element(value)
    }

    fn end(self) -> Result<(), CodecError> {
        Compound::end(self)
    }
}

impl ser::SerializeTupleStruct for Compound<'_, '_> {
    type Ok = ();
    type Error = CodecError;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), CodecError> {
        self.element(value)
    }

    fn end(self) -> Result<(), CodecError> {
        Compound::end(self)
    }
}

impl ser::SerializeTupleVariant for Compound<'_, '_> {
    type Ok = ();
    type Error = CodecError;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), CodecError> {
        self.element(value)
    }

    fn end(self) -> Result<(), CodecError> {
        Compound::end(self)
    }
}

impl ser::SerializeMap for Compound<'_, '_> {
    type Ok = ();
    type Error = CodecError;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), CodecError> {
        self.key(key)
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), CodecError> {
        self.value(value)
    }

    fn end(self) -> Result<(), CodecError> {
        Compound::end(self)
    }
}

impl ser::SerializeStruct for Compound<'_, '_> {
    type Ok = ();
    type Error = CodecError;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), CodecError> {
        self.field(key, value)
    }

    fn end(self) -> Result<(), CodecError> {
        Compound::end(self)
    }
}

impl ser::SerializeStructVariant for Compound<'_, '_> {
    type Ok = ();
    type Error = CodecError;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), CodecError> {
        self.field(key, value)
    }

    fn end(self) -> Result<(), CodecError> {
        Compound::end(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_sets_are_told_by_their_type_name() {
        use std::collections::{BTreeSet, HashSet};
        use std::sync::Arc;
        fn name<T: ?Sized>(_: &T) -> &'static str {
            std::any::type_name::<T>()
        }
        let set: HashSet<u8> = HashSet::new();
        assert!(is_hash_set(name(&set)));
        assert!(is_hash_set(name(&&set)));
        assert!(is_hash_set(name(&Arc::new(set.clone()))));
        assert!(is_hash_set(name(&Box::new(&set))));
        assert!(!is_hash_set(name(&BTreeSet::<u8>::new())));
        assert!(
            !is_hash_set(name(&vec![set.clone()])),
            "a Vec of sets is ordered"
        );
        assert!(
            !is_hash_set(name(&Some(set))),
            "Option: its Some is told on its own"
        );
    }

    #[test]
    fn some_wrappers_are_written_only_where_needed() {
        assert!(needs_some_wrapper(&[m::NIL]));
        assert!(needs_some_wrapper(&[m::FIXEXT1, ext::SOME as u8, m::NIL]));
        assert!(!needs_some_wrapper(&[m::FIXEXT16, ext::I128 as u8]));
        assert!(!needs_some_wrapper(&[5]));
        assert!(!needs_some_wrapper(&[m::FIXARRAY | 1, m::NIL]));
    }
}
