//! Any stored value or key as JSON text, for messages and the command line: the bytes say
//! what they hold, so no type is needed.

use std::fmt::Write;

use super::CodecError;
use super::de::{Decoder, Item};
use super::ext;

/// `bytes` (one value of the format) as JSON. Byte strings become arrays of numbers, 128-bit
/// integers numbers, non-finite floats `null`, and map keys that are not strings the JSON text
/// of the key, as a string.
///
/// The text is at most 16 times as long as the bytes (and 1 KiB): map keys that are maps with
/// map keys, nested, would otherwise double it at every level of quoting.
pub fn to_json(bytes: &[u8]) -> Result<String, CodecError> {
    let mut decoder = Decoder::new(bytes);
    let mut out = String::new();
    let limit = bytes.len().saturating_mul(16).saturating_add(1024);
    write_value(&mut decoder, &mut out, limit)?;
    decoder.end()?;
    Ok(out)
}

fn write_value(de: &mut Decoder<'_>, out: &mut String, limit: usize) -> Result<(), CodecError> {
    if out.len() > limit {
        return Err(de.error("the value is too large to show as JSON"));
    }
    match de.item()? {
        Item::Nil => out.push_str("null"),
        Item::Bool(b) => out.push_str(if b { "true" } else { "false" }),
        Item::Uint(n) => {
            let _ = write!(out, "{n}");
        }
        Item::Int(n) => {
            let _ = write!(out, "{n}");
        }
        Item::F32(x) => float(f64::from(x), out),
        Item::F64(x) => float(x, out),
        Item::Str(s) => string(de.str(s)?, out),
        Item::Bin(b) => {
            out.push('[');
            for (i, byte) in b.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{byte}");
            }
            out.push(']');
        }
        Item::Array(n) => {
            de.enter()?;
            out.push('[');
            for i in 0..n {
                if i > 0 {
                    out.push(',');
                }
                write_value(de, out, limit)?;
            }
            out.push(']');
            de.leave();
        }
        Item::Map(n) => {
            de.enter()?;
            out.push('{');
            for i in 0..n {
                if i > 0 {
                    out.push(',');
                }
                let mut key = String::new();
                write_value(de, &mut key, limit)?;
                if key.starts_with('"') {
                    out.push_str(&key);
                } else if out.len() + 2 * key.len() > limit {
                    return Err(de.error("the value is too large to show as JSON"));
                } else {
                    string(&key, out);
                }
                out.push(':');
                write_value(de, out, limit)?;
            }
            out.push('}');
            de.leave();
        }
        Item::Ext(ext::SOME, data) => {
            let mut inner = de.nested(data)?;
            write_value(&mut inner, out, limit)?;
            inner.end()?;
        }
        Item::Ext(ext::I128, data) if data.len() == 16 => {
            let _ = write!(out, "{}", i128::from_be_bytes(data.try_into().expect("16")));
        }
        Item::Ext(ext::U128, data) if data.len() == 16 => {
            let _ = write!(out, "{}", u128::from_be_bytes(data.try_into().expect("16")));
        }
        Item::Ext(ty, _) => return Err(de.error(format!("extension type {ty}"))),
    }
    Ok(())
}

fn float(x: f64, out: &mut String) {
    if x.is_finite() {
        let _ = write!(out, "{x:?}");
    } else {
        out.push_str("null");
    }
}

fn string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}
