//! Fuzz target body for typed decoding (feature `fuzzing`); see docs/fuzzing.md.

use std::collections::HashMap;
use std::fmt::Debug;

use serde::{Deserialize, Serialize};

use crate::cache::Value;
use crate::codec;
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

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(untagged)]
enum Loose {
    Number(i64),
    Text(String),
    Many(Vec<Option<Option<u8>>>),
}

/// Stores `bytes` raw under `key`, then reads them as `T`: a value or `Error::Decode`, never
/// a panic; and `get_or_insert_with` always yields a value (a bad entry is recomputed).
fn read_as<T: Value + Debug>(cache: &Cache, bytes: &[u8], fallback: T) {
    let (skey, _) = cache.storage_key("k").expect("a str key encodes");
    cache.backend().set(&skey, bytes, None).expect("memory set");
    let first = match cache.get::<T>("k") {
        Ok(v) => v,
        Err(Error::Decode { .. }) => None,
        Err(e) => panic!("reading arbitrary bytes gave {e}"),
    };
    // A second read comes from the decoded value kept in memory: the same.
    if first.is_some() {
        assert_eq!(
            format!("{:?}", cache.get::<T>("k").expect("read again")),
            format!("{first:?}")
        );
    }
    cache
        .get_or_insert_with("k", || fallback.clone())
        .expect("recomputes");
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
    read_as(cache, bytes, Loose::Number(1));
    read_as(cache, bytes, Some(None::<i128>));
}

/// If `data` decodes as a `T`, that value round trips through the cache and is refused, with
/// `Error::Decode`, as any other type: a fingerprint mismatch is never a misread value.
fn typed_round_trip<T: Value + Debug>(cache: &Cache, data: &[u8]) {
    let Ok(value) = codec::decode::<T>(data) else {
        return;
    };
    if cache.set("v", &value).is_err() {
        return; // deeper than the encoder allows
    }
    // Compared by canonical encoding: NaN is not equal to itself, hash maps iterate anyhow.
    let expected = codec::encode_key(&value).expect("encodes");
    for _decoded_then_kept in 0..2 {
        let got: T = cache.get("v").expect("reads back").expect("present");
        assert_eq!(codec::encode_key(&got).expect("encodes"), expected);
    }
    for other_is_refused in [
        cache.get::<UserDetail>("v").is_err()
            || type_fingerprint::<T>() == type_fingerprint::<UserDetail>(),
        cache.get::<Shape>("v").is_err() || type_fingerprint::<T>() == type_fingerprint::<Shape>(),
        cache.get::<Loose>("v").is_err() || type_fingerprint::<T>() == type_fingerprint::<Loose>(),
        cache.get::<String>("v").is_err()
            || type_fingerprint::<T>() == type_fingerprint::<String>(),
    ] {
        assert!(other_is_refused, "a value was read as another type");
    }
}

/// Arbitrary bytes as a stored entry, as the payload of a well-formed envelope of each type
/// (so the value decoder itself is exercised), and, where they decode, as values that must
/// round trip; keys and JSON rendering of the same bytes.
pub fn typed_decode(data: &[u8]) {
    let cache = Cache::with_backend(MemoryBackend::new(MemoryLimit::Entries(64)));
    each_type(&cache, data);
    for fingerprint in [
        type_fingerprint::<UserDetail>(),
        type_fingerprint::<String>(),
        type_fingerprint::<Vec<u64>>(),
        type_fingerprint::<HashMap<String, u32>>(),
        type_fingerprint::<Shape>(),
        type_fingerprint::<(u8, Option<String>)>(),
        type_fingerprint::<f64>(),
        type_fingerprint::<Loose>(),
        type_fingerprint::<Option<Option<i128>>>(),
    ] {
        let mut entry = Vec::new();
        envelope::encode_header(fingerprint, 0, &[], &mut entry).expect("envelope");
        entry.extend_from_slice(data);
        each_type(&cache, &entry);
    }
    typed_round_trip::<UserDetail>(&cache, data);
    typed_round_trip::<Shape>(&cache, data);
    typed_round_trip::<Loose>(&cache, data);
    typed_round_trip::<Vec<Option<Option<u8>>>>(&cache, data);
    typed_round_trip::<HashMap<String, u32>>(&cache, data);
    typed_round_trip::<(u8, i128, Option<String>)>(&cache, data);
    // Any decodable value is also a key: canonical keys decode to the same value, and encode
    // again to the same bytes.
    if let Ok(text) = codec::to_json(data)
        && let Ok(key) = codec::encode_key(&Loose::Text(text))
    {
        assert_eq!(
            codec::encode_key(&codec::decode::<Loose>(&key).expect("a key decodes")).ok(),
            Some(key)
        );
    }
    if let Ok(value) = codec::decode::<Vec<Loose>>(data)
        && let Ok(key) = codec::encode_key(&value)
    {
        let again: Vec<Loose> = codec::decode(&key).expect("a key decodes");
        assert_eq!(codec::encode_key(&again).expect("encodes"), key);
    }
}
