//! Fuzz target body for typed decoding (feature `fuzzing`); see docs/fuzzing.md.

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::envelope;
use crate::error::Error;
use crate::fingerprint::type_fingerprint;
use crate::{Cache, MemoryBackend, MemoryLimit};

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct UserDetail {
    name: String,
    age: u8,
    tags: Vec<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
enum Shape {
    Circle(f64),
    Rect { w: u32, h: u32 },
    Empty,
}

/// Stores `bytes` raw under `key`, then reads them as `T`: a value or `Error::Decode`, never
/// a panic; and `get_or_insert_with` always yields a value (a bad entry is recomputed).
fn read_as<T>(cache: &Cache, bytes: &[u8], fallback: T)
where
    T: Serialize + DeserializeOwned + Clone + 'static,
{
    let (skey, _) = cache.storage_key("k").expect("a str key encodes");
    cache.backend().set(&skey, bytes, None).expect("memory set");
    match cache.get::<T>("k") {
        Ok(_) | Err(Error::Decode { .. }) => {}
        Err(e) => panic!("reading arbitrary bytes gave {e}"),
    }
    let got = cache
        .get_or_insert_with("k", || fallback.clone())
        .expect("recomputes");
    let _ = got;
}

fn each_type(cache: &Cache, bytes: &[u8]) {
    read_as(
        cache,
        bytes,
        UserDetail {
            name: "x".into(),
            age: 1,
            tags: vec![],
        },
    );
    read_as(cache, bytes, String::from("fallback"));
    read_as(cache, bytes, vec![1u64, 2]);
    read_as(cache, bytes, HashMap::from([(String::from("a"), 1u32)]));
    read_as(cache, bytes, Shape::Empty);
    read_as(cache, bytes, (7u8, Some(String::from("t"))));
    read_as(cache, bytes, 1.5f64);
}

/// Arbitrary bytes as a stored entry, and as the payload of a well-formed envelope of each
/// type (so the value decoder itself is exercised), read back as several types.
pub fn typed_decode(data: &[u8]) {
    let cache = Cache::with_backend(MemoryBackend::new(MemoryLimit::Entries(64)));
    each_type(&cache, data);
    let wrap = |fingerprint| envelope::encode(fingerprint, 0, &[], data).expect("envelope");
    for fingerprint in [
        type_fingerprint::<UserDetail>(),
        type_fingerprint::<String>(),
        type_fingerprint::<Vec<u64>>(),
        type_fingerprint::<HashMap<String, u32>>(),
        type_fingerprint::<Shape>(),
        type_fingerprint::<(u8, Option<String>)>(),
        type_fingerprint::<f64>(),
    ] {
        each_type(&cache, &wrap(fingerprint));
    }
}
