//! A fingerprint of a type's shape: what its `Deserialize` impl asks for (struct and field
//! names, field types, every enum variant and its content, recursively), traced by
//! [`trace`] and hashed. Changing a field or a variant changes the fingerprint, so cached
//! values of the old shape are never read as the new one.
//!
//! Where a part of a type cannot be traced (`serde_json::Value`, untagged and internally
//! tagged enums, `flatten`, types that refuse made-up values), the fingerprint holds what was
//! traced plus the type's name. That is still safe: values are self-describing (`codec`), so a
//! changed shape the fingerprint misses fails to decode, or decodes to the same value, but is
//! never reinterpreted.

mod shape;
mod trace;

use std::any::TypeId;
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use parking_lot::RwLock;
use serde::de::DeserializeOwned;

/// A stable 64-bit hash (XXH3) of `bytes`: the same on every build and machine.
pub(crate) fn stable_hash(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// The shape of `T` as text: the traced tree, and, if some part could not be traced, a note
/// saying so with the type's name (which then also changes when the type moves or is renamed).
pub(crate) fn describe<T: DeserializeOwned>() -> String {
    let (shape, complete) = trace::trace::<T>();
    let mut text = String::new();
    shape.render(&mut text);
    if !complete {
        text.push_str(" | partly traced: ");
        text.push_str(std::any::type_name::<T>());
    }
    text
}

/// `TypeId`s are hashes already: use their bits.
#[derive(Default)]
struct TypeIdHasher(u64);

impl Hasher for TypeIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
}

type ByTypeId = HashMap<TypeId, u64, BuildHasherDefault<TypeIdHasher>>;

/// Fingerprints this thread used last, looked at before the shared table (no lock).
const RECENT: usize = 8;

thread_local! {
    static RECENT_FINGERPRINTS: RefCell<Vec<(TypeId, u64)>> = const { RefCell::new(Vec::new()) };
}

/// The fingerprint of `T`, computed once per type and process.
#[inline]
pub fn type_fingerprint<T: DeserializeOwned + 'static>() -> u64 {
    let id = TypeId::of::<T>();
    let recent = RECENT_FINGERPRINTS.with(|r| {
        r.borrow()
            .iter()
            .find(|(known, _)| *known == id)
            .map(|(_, fp)| *fp)
    });
    if let Some(fp) = recent {
        return fp;
    }
    let fp = shared_fingerprint::<T>(id);
    RECENT_FINGERPRINTS.with(|r| {
        let mut r = r.borrow_mut();
        if r.len() == RECENT {
            r.remove(0);
        }
        r.push((id, fp));
    });
    fp
}

/// The fingerprint of `T` from the table of every process thread, computed on first use.
fn shared_fingerprint<T: DeserializeOwned + 'static>(id: TypeId) -> u64 {
    static CACHE: RwLock<Option<ByTypeId>> = RwLock::new(None);
    if let Some(fp) = CACHE.read().as_ref().and_then(|m| m.get(&id)) {
        return *fp;
    }
    let fp = stable_hash(describe::<T>().as_bytes());
    CACHE
        .write()
        .get_or_insert_with(Default::default)
        .insert(id, fp);
    fp
}

#[cfg(test)]
mod tests;
