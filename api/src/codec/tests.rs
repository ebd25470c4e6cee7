//! Round trips of every serde shape, canonical keys, MessagePack compatibility and hostile
//! input.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Debug;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::num::NonZeroU32;
use std::time::Duration;

use proptest::prelude::*;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::json;

use super::marker as m;
use super::*;

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: T) {
    let bytes = encode_value(&value).unwrap();
    let back: T = decode(&bytes).unwrap_or_else(|e| panic!("{value:?}: {e}"));
    assert_eq!(back, value);
    // Any stored value can be skipped over.
    decode::<serde::de::IgnoredAny>(&bytes).unwrap();
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
struct UserDetail {
    name: String,
    age: u8,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum Every {
    Unit,
    Newtype(u32),
    Tuple(i8, String),
    Struct { a: Option<bool>, b: Vec<u16> },
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
#[serde(untagged)]
enum Untagged {
    Number(i64),
    Text(String),
    User(UserDetail),
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
#[serde(tag = "type")]
enum Internal {
    Circle { r: f64 },
    Square { side: u32 },
    Empty,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
#[serde(tag = "t", content = "c")]
enum Adjacent {
    A(u8),
    B { x: String },
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Flattened {
    id: u32,
    #[serde(flatten)]
    user: UserDetail,
    #[serde(flatten)]
    extra: BTreeMap<String, serde_json::Value>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Skipping {
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    tags: Vec<String>,
    after: u8,
    #[serde(skip)]
    never: u8,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Unit;

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Newtype(String);

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Tuple(u8, i64, ());

/// Bytes through `serialize_bytes` (what `serde_bytes` does).
#[derive(Debug, PartialEq)]
struct Bytes(Vec<u8>);

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Bytes;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Bytes, E> {
                Ok(Bytes(v.to_vec()))
            }
        }
        d.deserialize_byte_buf(V)
    }
}

/// A sequence of unknown length (`serialize_seq(None)`).
#[derive(Debug, PartialEq)]
struct Evens(Vec<u32>);

impl Serialize for Evens {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().filter(|n| *n % 2 == 0))
    }
}

#[test]
fn every_serde_shape_round_trips() {
    round_trip(UserDetail {
        name: "Jason".into(),
        age: 25,
    });
    round_trip(Every::Unit);
    round_trip(Every::Newtype(7));
    round_trip(Every::Tuple(-3, "t".into()));
    round_trip(Every::Struct {
        a: Some(false),
        b: vec![1, 300],
    });
    round_trip(vec![Every::Unit, Every::Newtype(1)]);
    round_trip(Some(Every::Unit));
    round_trip(Untagged::Number(-5));
    round_trip(Untagged::Text("x".into()));
    round_trip(Untagged::User(UserDetail {
        name: "a".into(),
        age: 1,
    }));
    round_trip(Internal::Circle { r: 1.5 });
    round_trip(Internal::Square { side: 3 });
    round_trip(Internal::Empty);
    round_trip(Adjacent::A(1));
    round_trip(Adjacent::B { x: "b".into() });
    round_trip(Flattened {
        id: 1,
        user: UserDetail {
            name: "n".into(),
            age: 2,
        },
        extra: BTreeMap::from([("k".into(), json!([1, "two", null]))]),
    });
    round_trip(Skipping {
        email: None,
        tags: vec![],
        after: 9,
        never: 0,
    });
    round_trip(Skipping {
        email: Some("e".into()),
        tags: vec!["t".into()],
        after: 9,
        never: 0,
    });
    round_trip(Unit);
    round_trip(Newtype("n".into()));
    round_trip(Tuple(1, i64::MIN, ()));
    round_trip(());
    round_trip(Bytes(vec![0, 255, 7]));
    round_trip(Bytes(vec![1; 70_000]));
    round_trip(
        json!({"model": "m", "choices": [{"text": "hi", "score": 0.5}], "n": null, "ok": true, "big": u64::MAX, "neg": -1}),
    );
    round_trip(HashMap::from([(1u32, "a".to_string()), (2, "b".into())]));
    // Everything without bytes or 128-bit integers reads as JSON too (what the CLI shows).
    let json: serde_json::Value =
        decode(&encode_value(&Every::Tuple(-1, "t".into())).unwrap()).unwrap();
    assert_eq!(json, json!({"Tuple": [-1, "t"]}));
    round_trip(BTreeMap::from([((1u8, 'c'), vec![Some(1.5f32)])]));
    round_trip(HashSet::from(["a".to_string()]));
    round_trip(IpAddr::V4(Ipv4Addr::LOCALHOST));
    round_trip(IpAddr::V6(Ipv6Addr::LOCALHOST));
    round_trip(NonZeroU32::new(7).unwrap());
    round_trip(Duration::from_millis(1500));
    round_trip(('é', '\u{10FFFF}'));
    round_trip(Box::new(5u8));
    round_trip([1u8; 3]);
}

#[test]
fn nested_options_keep_every_some() {
    round_trip(Some(None::<u8>));
    round_trip(None::<Option<u8>>);
    round_trip(Some(Some(3u8)));
    round_trip(Some(Some(None::<u8>)));
    round_trip(Some(Some(Some(None::<u8>))));
    round_trip(Some(()));
    round_trip(None::<()>);
    round_trip(vec![Some(None::<String>), None, Some(Some("x".into()))]);
    round_trip(Some(Some(u128::MAX)));
    round_trip(Some(i128::MIN));
    // `Some(x)` is written as `x` where that is unambiguous: plain MessagePack.
    assert_eq!(encode_value(&Some(5u8)).unwrap(), vec![5]);
    assert_eq!(encode_value(&None::<u8>).unwrap(), vec![0xc0]);
    assert_eq!(
        encode_value(&Some(None::<u8>)).unwrap(),
        vec![0xd4, 1, 0xc0]
    );
}

#[test]
fn numbers_keep_their_value_at_every_width() {
    for n in [
        0i64,
        1,
        127,
        128,
        255,
        256,
        65_535,
        65_536,
        i64::MAX,
        -1,
        -32,
        -33,
        -128,
        -129,
        -32_768,
        -32_769,
        i64::MIN,
    ] {
        round_trip(n);
        round_trip(i128::from(n));
    }
    for n in [
        0u64,
        127,
        128,
        255,
        256,
        65_535,
        65_536,
        u64::from(u32::MAX),
        u64::from(u32::MAX) + 1,
        u64::MAX,
    ] {
        round_trip(n);
        round_trip(u128::from(n));
    }
    round_trip(i128::MAX);
    round_trip(i128::MIN);
    round_trip(u128::MAX);
    round_trip((u8::MAX, i8::MIN, u16::MAX, i16::MIN, u32::MAX, i32::MIN));
    round_trip((f32::MIN_POSITIVE, f64::MAX, -0.0f64, f32::INFINITY));
    let nan: f64 = decode(&encode_value(&f64::NAN).unwrap()).unwrap();
    assert!(nan.is_nan());
    // A value is never reinterpreted: out of range is an error, in range is the same number.
    let seven = encode_value(&7u32).unwrap();
    assert_eq!(decode::<i32>(&seven).unwrap(), 7);
    assert!(decode::<u32>(&encode_value(&-4i32).unwrap()).is_err());
    assert!(decode::<u8>(&encode_value(&256u32).unwrap()).is_err());
    assert!(decode::<String>(&seven).is_err());
    assert!(decode::<bool>(&seven).is_err());
}

#[test]
fn strings_and_containers_at_every_header_size() {
    for len in [0, 31, 32, 255, 256, 65_535, 65_536] {
        round_trip("x".repeat(len));
    }
    for len in [0, 15, 16, 65_535, 65_536] {
        round_trip(vec![1u8; len]);
        round_trip(
            (0..len as u32)
                .map(|i| (i, i % 3 == 0))
                .collect::<BTreeMap<_, _>>(),
        );
    }
    for len in [0, 14, 15, 17, 40_000] {
        let evens = Evens((0..len).collect());
        let back: Vec<u32> = decode(&encode_value(&evens).unwrap()).unwrap();
        assert_eq!(back, (0..len).filter(|n| n % 2 == 0).collect::<Vec<_>>());
    }
}

#[test]
fn a_changed_shape_fails_to_decode_instead_of_being_misread() {
    #[derive(Deserialize, Debug)]
    #[allow(dead_code)]
    struct Renamed {
        full_name: String,
        age: u8,
    }
    #[derive(Deserialize, Debug)]
    #[allow(dead_code)]
    enum Other {
        Unit,
        Newtype(String),
    }
    let user = encode_value(&UserDetail {
        name: "J".into(),
        age: 300u16 as u8,
    })
    .unwrap();
    assert!(decode::<Renamed>(&user).is_err());
    assert!(decode::<(String, u8)>(&user).is_err());
    assert!(decode::<Other>(&encode_value(&Every::Newtype(7)).unwrap()).is_err());
    assert!(decode::<Every>(&encode_value(&Every::Unit).unwrap()).is_ok());
    assert!(decode::<(u8, u8)>(&encode_value(&(1u8, 2u8, 3u8)).unwrap()).is_err());
    assert!(decode::<(u8, u8, u8)>(&encode_value(&(1u8, 2u8)).unwrap()).is_err());
}

/// Known MessagePack bytes: the format is MessagePack, readable by any of its libraries.
#[test]
fn the_bytes_are_message_pack() {
    let user = UserDetail {
        name: "Jason".into(),
        age: 25,
    };
    let mut expected = vec![0x82, 0xa4];
    expected.extend_from_slice(b"name");
    expected.push(0xa5);
    expected.extend_from_slice(b"Jason");
    expected.push(0xa3);
    expected.extend_from_slice(b"age");
    expected.push(25);
    assert_eq!(encode_value(&user).unwrap(), expected);
    assert_eq!(encode_value(&-1i8).unwrap(), vec![0xff]);
    assert_eq!(encode_value(&200u8).unwrap(), vec![0xcc, 200]);
    assert_eq!(encode_value(&-200i16).unwrap(), vec![0xd1, 0xff, 0x38]);
    assert_eq!(encode_value(&1.5f64).unwrap()[0], 0xcb);
    assert_eq!(encode_value(&Every::Unit).unwrap(), b"\xa4Unit".to_vec());
    assert_eq!(
        encode_value(&Every::Newtype(1)).unwrap(),
        b"\x81\xa7Newtype\x01".to_vec()
    );
    assert_eq!(encode_value(&(true, ())).unwrap(), vec![0x92, 0xc3, 0xc0]);
}

#[test]
fn equal_keys_encode_equal_whatever_the_iteration_order() {
    // Two hash maps with the same entries, built with different random seeds (their
    // iteration orders differ), a BTreeMap and a JSON object: one encoding.
    let entries: Vec<(String, u32)> = (0..64).map(|i| (format!("k{i}"), i)).collect();
    let a: HashMap<String, u32> = entries.iter().cloned().collect();
    let b: HashMap<String, u32> = entries.iter().rev().cloned().collect();
    assert_ne!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "the test needs two iteration orders"
    );
    let c: BTreeMap<String, u32> = entries.iter().cloned().collect();
    let d: serde_json::Map<String, serde_json::Value> =
        entries.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    let key = encode_key(&a).unwrap();
    assert_eq!(encode_key(&b).unwrap(), key);
    assert_eq!(encode_key(&c).unwrap(), key);
    assert_eq!(encode_key(&d).unwrap(), key);
    assert_ne!(
        encode_value(&a).unwrap(),
        encode_value(&b).unwrap(),
        "values keep their order"
    );

    let s1: HashSet<u32> = (0..64).collect();
    let s2: HashSet<u32> = (0..64).rev().collect();
    assert_eq!(encode_key(&s1).unwrap(), encode_key(&s2).unwrap());
    assert_eq!(
        encode_key(&(&s1, "x")).unwrap(),
        encode_key(&(&s2, "x")).unwrap()
    );
    assert_eq!(
        encode_key(&Some(vec![s1.clone()])).unwrap(),
        encode_key(&Some(vec![s2.clone()])).unwrap()
    );
    assert_eq!(
        encode_key(&s1).unwrap(),
        encode_key(&s1.iter().copied().collect::<BTreeSet<u32>>()).unwrap()
    );
    // Order still matters where it means something.
    assert_ne!(
        encode_key(&vec![1, 2]).unwrap(),
        encode_key(&vec![2, 1]).unwrap()
    );
    // A struct key and the JSON object of its fields are the same key (the CLI relies on it).
    #[derive(Serialize)]
    struct Query<'a> {
        prompt: &'a str,
        model: &'a str,
    }
    assert_eq!(
        encode_key(&Query {
            prompt: "p",
            model: "m"
        })
        .unwrap(),
        encode_key(&json!({"model": "m", "prompt": "p"})).unwrap()
    );
    assert_eq!(
        encode_key("opt").unwrap(),
        encode_key(&json!("opt")).unwrap()
    );
    assert_eq!(
        encode_key(&("square", 12)).unwrap(),
        encode_key(&json!(["square", 12])).unwrap()
    );
    // A canonical key is still valid MessagePack of the same value.
    let back: BTreeMap<String, u32> = decode(&key).unwrap();
    assert_eq!(back, c);
}

#[test]
fn every_cut_of_a_value_is_an_error() {
    let value =
        json!({"a": [1, 2.5, "three", null, {"b": true}], "c": -70000, "d": "x".repeat(40)});
    let bytes = encode_value(&(value, Some(None::<u8>), u128::MAX)).unwrap();
    for cut in 0..bytes.len() {
        assert!(
            decode::<serde_json::Value>(&bytes[..cut]).is_err(),
            "cut at {cut}"
        );
        assert!(
            decode::<(serde_json::Value, Option<Option<u8>>, u128)>(&bytes[..cut]).is_err(),
            "cut at {cut}"
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(decode::<serde_json::Value>(&longer).is_err());
}

#[test]
fn hostile_lengths_and_nesting_are_refused() {
    // An array claiming 2^32 - 1 elements, a string claiming 4 GiB, a map claiming 65535
    // entries: refused from the bytes left, before allocating anything.
    assert!(decode::<Vec<u64>>(&[m::ARRAY32, 0xff, 0xff, 0xff, 0xff, 1]).is_err());
    assert!(decode::<String>(&[m::STR32, 0xff, 0xff, 0xff, 0xff, b'a']).is_err());
    assert!(decode::<serde_json::Value>(&[m::MAP16, 0xff, 0xff, 1, 1]).is_err());
    assert!(
        decode::<String>(&[m::FIXSTR | 2, 0xff, 0xfe]).is_err(),
        "not UTF-8"
    );
    assert!(decode::<u8>(&[0xc1]).is_err());
    assert!(
        decode::<u8>(&[m::FIXEXT1, 99, 0]).is_err(),
        "an unknown extension"
    );
    // Nesting: 100,000 arrays of one element, and a chain of `Some` wrappers.
    let mut deep = vec![m::FIXARRAY | 1; 100_000];
    deep.push(0);
    assert!(decode::<serde_json::Value>(&deep).is_err());
    assert!(decode::<serde::de::IgnoredAny>(&deep).is_err());
    let mut somes = Vec::new();
    for _ in 0..1000 {
        somes.extend_from_slice(&[m::FIXEXT1, ext::SOME as u8]);
    }
    somes.push(m::NIL);
    assert!(decode::<serde_json::Value>(&somes).is_err());
    // What could not be read back is not written.
    let mut value = json!(1);
    for _ in 0..MAX_DEPTH + 1 {
        value = json!([value]);
    }
    assert!(encode_value(&value).is_err());
    let mut shallow = json!(1);
    for _ in 0..MAX_DEPTH - 1 {
        shallow = json!([shallow]);
    }
    round_trip(shallow);
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        (-1e300f64..1e300).prop_map(serde_json::Value::from),
        ".{0,40}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::from),
            prop::collection::btree_map(".{0,8}", inner, 0..8)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn any_json_value_round_trips(value in json_value()) {
        let bytes = encode_value(&value).unwrap();
        prop_assert_eq!(decode::<serde_json::Value>(&bytes).unwrap(), value.clone());
        // A canonical key is a valid encoding of the same value.
        prop_assert_eq!(decode::<serde_json::Value>(&encode_key(&value).unwrap()).unwrap(), value);
    }

    #[test]
    fn typed_values_round_trip(
        items in prop::collection::vec((any::<u16>(), prop::option::of(prop::option::of(".{0,8}")), any::<i128>()), 0..20),
        set in prop::collection::hash_set(any::<i32>(), 0..30),
    ) {
        let value = (items, set);
        let bytes = encode_value(&value).unwrap();
        prop_assert_eq!(decode::<(Vec<(u16, Option<Option<String>>, i128)>, HashSet<i32>)>(&bytes).unwrap(), value.clone());
        let mut sorted: Vec<i32> = value.1.iter().copied().collect();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        let reordered: HashSet<i32> = sorted.into_iter().collect();
        prop_assert_eq!(encode_key(&(&value.0, &reordered)).unwrap(), encode_key(&value).unwrap());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = decode::<serde_json::Value>(&bytes);
        let _ = decode::<(Option<Option<u8>>, Every, String)>(&bytes);
        let _ = decode::<serde::de::IgnoredAny>(&bytes);
    }
}

#[test]
fn any_value_renders_as_json() {
    let value = json!({"a": [1, -2, 2.5, "q\"\n", null, true], "b": {"c": {}}});
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(
            &to_json(&encode_value(&value).unwrap()).unwrap()
        )
        .unwrap(),
        value
    );
    let odd = (
        Bytes(vec![1, 2]),
        u128::MAX,
        Some(None::<u8>),
        BTreeMap::from([(1u8, f64::NAN)]),
    );
    let text = to_json(&encode_value(&odd).unwrap()).unwrap();
    assert_eq!(text, format!("[[1,2],{},null,{{\"1\":null}}]", u128::MAX));
    serde_json::from_str::<serde_json::Value>(&text).unwrap();
    assert!(to_json(&[0x91]).is_err());
}

#[test]
fn an_array_written_part_by_part_is_the_tuple_encoded() {
    let mut direct = Vec::new();
    write_array_header(3, &mut direct).unwrap();
    write_uint(300, &mut direct);
    encode_key_into("Jason is 25", &mut direct).unwrap();
    encode_key_into(&3u8, &mut direct).unwrap();
    assert_eq!(direct, encode_key(&(300u64, "Jason is 25", 3u8)).unwrap());
}

#[test]
fn keys_quoted_in_keys_do_not_blow_up_the_text() {
    // Maps whose key is a map whose key is a map...: each level quotes the one inside, which
    // doubles the text; it is cut off at 16 times the bytes.
    let mut bytes = vec![m::FIXMAP | 1; 60];
    bytes.extend_from_slice(&[0xa1, b'"', 1]);
    bytes.extend(std::iter::repeat_n(1, 59));
    let err = to_json(&bytes).unwrap_err();
    assert!(err.to_string().contains("too large"), "{err}");
    // Two levels are fine.
    let two = encode_value(&BTreeMap::from([(BTreeMap::from([(1u8, 2u8)]), 3u8)])).unwrap();
    assert_eq!(to_json(&two).unwrap(), r#"{"{\"1\":2}":3}"#);
}

/// A type whose field names are read by a hand-written visitor that takes strings only (the
/// example of serde's documentation does so): it still decodes.
#[test]
fn visitors_that_take_names_as_strings_only_still_decode() {
    #[derive(Debug, PartialEq)]
    struct Point {
        x: i32,
    }
    impl<'de> Deserialize<'de> for Point {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Field;
            impl<'de> Deserialize<'de> for Field {
                fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                    struct V;
                    impl serde::de::Visitor<'_> for V {
                        type Value = Field;
                        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                            f.write_str("`x`")
                        }
                        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Field, E> {
                            if v == "x" {
                                Ok(Field)
                            } else {
                                Err(E::unknown_field(v, &["x"]))
                            }
                        }
                    }
                    d.deserialize_identifier(V)
                }
            }
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Point;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a point")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<Point, A::Error> {
                    let Field = map
                        .next_key::<Field>()?
                        .ok_or_else(|| serde::de::Error::missing_field("x"))?;
                    Ok(Point {
                        x: map.next_value()?,
                    })
                }
            }
            d.deserialize_struct("Point", &["x"], V)
        }
    }
    #[derive(Serialize)]
    struct PointOut {
        x: i32,
    }
    let bytes = encode_value(&PointOut { x: -5 }).unwrap();
    assert_eq!(decode::<Point>(&bytes).unwrap(), Point { x: -5 });
    // Names that are not UTF-8 are refused where they are checked, and never matched.
    let mut bad = bytes.clone();
    bad[2] = 0xff;
    assert!(decode::<Point>(&bad).is_err());
    assert!(decode::<UserDetail>(&encode_value(&PointOut { x: 1 }).unwrap()).is_err());
}
