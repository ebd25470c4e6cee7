//! A fingerprint of a type's shape: its serde format (struct and field names, field types,
//! enum variants, recursively), hashed. Changing a field changes the fingerprint, so cached
//! values of the old shape are never decoded as the new one.

use std::any::TypeId;
use std::collections::HashMap;

use parking_lot::RwLock;
use serde::de::DeserializeOwned;
use serde_reflection::{Tracer, TracerConfig};

/// A stable 64-bit hash (XXH3) of `bytes`: the same on every build and machine.
pub(crate) fn stable_hash(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// The shape of `T` as text: its traced serde format and the formats of every named type it
/// contains. Types whose `Deserialize` cannot be traced (custom impls that validate their
/// input) fall back to their type name.
fn describe<T: DeserializeOwned>() -> String {
    let mut tracer = Tracer::new(TracerConfig::default());
    match tracer
        .trace_simple_type::<T>()
        .map_err(|e| e.to_string())
        .and_then(|(format, _)| {
            tracer
                .registry()
                .map(|r| (format, r))
                .map_err(|e| e.to_string())
        }) {
        Ok((format, registry)) => format!("{format:?} {registry:?}"),
        Err(_) => format!("type_name:{}", std::any::type_name::<T>()),
    }
}

/// The fingerprint of `T`, computed once per type and process.
pub fn type_fingerprint<T: DeserializeOwned + 'static>() -> u64 {
    static CACHE: RwLock<Option<HashMap<TypeId, u64>>> = RwLock::new(None);
    let id = TypeId::of::<T>();
    if let Some(fp) = CACHE.read().as_ref().and_then(|m| m.get(&id)) {
        return *fp;
    }
    let fp = stable_hash(describe::<T>().as_bytes());
    CACHE
        .write()
        .get_or_insert_with(HashMap::new)
        .insert(id, fp);
    fp
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    mod v1 {
        #[derive(serde::Deserialize)]
        #[allow(dead_code)]
        pub struct UserDetail {
            pub name: String,
            pub age: u8,
        }
    }

    mod v2 {
        #[derive(serde::Deserialize)]
        #[allow(dead_code)]
        pub struct UserDetail {
            pub name: String,
            pub age: u8,
            pub email: Option<String>,
        }
    }

    mod v3 {
        #[derive(serde::Deserialize)]
        #[allow(dead_code)]
        pub struct UserDetail {
            pub name: String,
            pub age: u16,
        }
    }

    mod renamed {
        #[derive(serde::Deserialize)]
        #[allow(dead_code)]
        pub struct UserDetail {
            pub full_name: String,
            pub age: u8,
        }
    }

    #[derive(Deserialize)]
    #[allow(dead_code)]
    enum Shape {
        Circle(f64),
        Square { side: f64 },
    }

    #[test]
    fn any_change_of_shape_changes_the_fingerprint() {
        let fps = [
            type_fingerprint::<v1::UserDetail>(),
            type_fingerprint::<v2::UserDetail>(),
            type_fingerprint::<v3::UserDetail>(),
            type_fingerprint::<renamed::UserDetail>(),
            type_fingerprint::<Shape>(),
            type_fingerprint::<u32>(),
            type_fingerprint::<i32>(),
            type_fingerprint::<String>(),
            type_fingerprint::<Vec<u8>>(),
        ];
        for (i, a) in fps.iter().enumerate() {
            for b in &fps[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn the_fingerprint_is_stable() {
        assert_eq!(
            type_fingerprint::<v1::UserDetail>(),
            type_fingerprint::<v1::UserDetail>()
        );
        assert_eq!(stable_hash(b"logcache"), stable_hash(b"logcache"));
        // The description is the traced format; this pins its form.
        let expected = serde_reflection::Format::Tuple(vec![
            serde_reflection::Format::U8,
            serde_reflection::Format::Str,
        ]);
        assert_eq!(describe::<(u8, String)>(), format!("{expected:?} {{}}"));
    }
}
