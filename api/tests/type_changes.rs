//! A type changed between two builds never reads its old entries as the new shape, and an
//! unchanged type still hits after a restart.
//!
//! Each case declares the type as it was (`before`) and as it is (`after`), two modules of one
//! binary standing for two builds. This test writes entries of every `before` type to a disk
//! cache, with `set` and through memoization, then runs itself again as a second process
//! (`LOGCACHE_TYPE_CHANGES_DIR` set), which reads them back: as the `after` type, `get` is
//! `Error::Decode` and the memoized function computes afresh; as the `before` type, both hit.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use logcache::memo::{self, MemoSpec};
use logcache::{Cache, Error};

const CHILD_ENV: &str = "LOGCACHE_TYPE_CHANGES_DIR";

/// One case: `$name`, its types in `before` and `after` (each with a `T` and a `value()`).
macro_rules! cases {
    ($($name:ident: { $($before:item)* } => { $($after:item)* })*) => {
        $(
            #[allow(dead_code)]
            mod $name {
                pub mod before {
                    #[allow(unused_imports)]
                    use serde::{Deserialize, Serialize};
                    $($before)*
                }
                pub mod after {
                    #[allow(unused_imports)]
                    use serde::{Deserialize, Serialize};
                    $($after)*
                }
            }
        )*

        fn write_all(cache: &Cache) {
            $(write::<$name::before::T>(cache, stringify!($name), $name::before::value());)*
        }

        /// Every case, read in the second process: (name, old entry refused as the new type,
        /// unchanged type hit).
        fn read_all(cache: &Cache) -> Vec<(&'static str, bool, bool)> {
            vec![$((
                stringify!($name),
                refused::<$name::after::T>(cache, stringify!($name), $name::after::value()),
                hits::<$name::before::T>(cache, stringify!($name), $name::before::value()),
            ),)*]
        }
    };
}

cases! {
    field_added: {
        #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)] pub struct T { pub name: String, pub age: u8 }
        pub fn value() -> T { T { name: "Jason".into(), age: 25 } }
    } => {
        #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)] pub struct T { pub name: String, pub age: u8, #[serde(default)] pub email: Option<String> }
        pub fn value() -> T { T { name: "Jason".into(), age: 25, email: None } }
    }
    field_removed: {
        #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)] pub struct T { pub name: String, pub age: u8 }
        pub fn value() -> T { T { name: "Jason".into(), age: 25 } }
    } => {
        #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)] pub struct T { pub name: String }
        pub fn value() -> T { T { name: "Jason".into() } }
    }
    field_renamed: {
        #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)] pub struct T { pub name: String, pub age: u8 }
        pub fn value() -> T { T { name: "Jason".into(), age: 25 } }
    } => {
        #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)] pub struct T { #[serde(alias = "name")] pub full_name: String, pub age: u8 }
        pub fn value() -> T { T { full_name: "Jason".into(), age: 25 } }
    }
    u32_to_i32: {
        #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)] pub enum Sentiment { Positive, Negative }
        #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)] pub struct T { pub sentiment: Sentiment, pub score: u32 }
        pub fn value() -> T { T { sentiment: Sentiment::Positive, score: 7 } }
    } => {
        #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)] pub enum Sentiment { Positive, Negative }
        #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)] pub struct T { pub sentiment: Sentiment, pub score: i32 }
        pub fn value() -> T { T { sentiment: Sentiment::Positive, score: -4 } }
    }
    u8_to_u32: {
        #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)] pub struct T { pub age: u8 }
        pub fn value() -> T { T { age: 25 } }
    } => {
        #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)] pub struct T { pub age: u32 }
        pub fn value() -> T { T { age: 25 } }
    }
    string_to_bytes: {
        #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)] pub struct T { pub body: String }
        pub fn value() -> T { T { body: "hi".into() } }
    } => {
        #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)] pub struct T { pub body: Vec<u8> }
        pub fn value() -> T { T { body: b"hi".to_vec() } }
    }
    variant_added: {
        #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)] pub enum T { Positive, Negative }
        pub fn value() -> T { T::Negative }
    } => {
        #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)] pub enum T { Positive, Negative, Neutral }
        pub fn value() -> T { T::Neutral }
    }
    variant_removed: {
        #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)] pub enum T { Positive, Negative, Neutral }
        pub fn value() -> T { T::Positive }
    } => {
        #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)] pub enum T { Positive, Negative }
        pub fn value() -> T { T::Positive }
    }
    variants_reordered: {
        #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)] pub enum T { Positive, Negative }
        pub fn value() -> T { T::Negative }
    } => {
        #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)] pub enum T { Negative, Positive }
        pub fn value() -> T { T::Negative }
    }
    variant_renamed: {
        #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)] pub enum T { Positive, Negative }
        pub fn value() -> T { T::Positive }
    } => {
        #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)] pub enum T { Positive, Bad }
        pub fn value() -> T { T::Positive }
    }
    nested_enum_field_retyped: {
        #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)] pub enum Kind { Plain, Scored { score: u32 } }
        #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)] pub struct T { pub kind: Kind }
        pub fn value() -> T { T { kind: Kind::Plain } }
    } => {
        #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)] pub enum Kind { Plain, Scored { score: i64 } }
        #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)] pub struct T { pub kind: Kind }
        pub fn value() -> T { T { kind: Kind::Plain } }
    }
    option_enum: {
        #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)] pub enum E { A(u8), B }
        #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)] pub struct T { pub e: Option<E> }
        pub fn value() -> T { T { e: Some(E::B) } }
    } => {
        #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)] pub enum E { A(i8), B }
        #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)] pub struct T { pub e: Option<E> }
        pub fn value() -> T { T { e: Some(E::B) } }
    }
    vec_enum: {
        #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)] pub enum E { A, B { s: String } }
        #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)] pub struct T { pub e: Vec<E> }
        pub fn value() -> T { T { e: vec![E::A] } }
    } => {
        #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)] pub enum E { A, B { text: String } }
        #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)] pub struct T { pub e: Vec<E> }
        pub fn value() -> T { T { e: vec![E::A] } }
    }
    non_zero: {
        #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)] pub struct T { pub n: std::num::NonZeroU32, pub label: String }
        pub fn value() -> T { T { n: std::num::NonZeroU32::new(3).unwrap(), label: "l".into() } }
    } => {
        #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)] pub struct T { pub n: std::num::NonZeroU64, pub label: String }
        pub fn value() -> T { T { n: std::num::NonZeroU64::new(3).unwrap(), label: "l".into() } }
    }
    ip_addr: {
        #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)] pub struct T { pub ip: std::net::IpAddr }
        pub fn value() -> T { T { ip: std::net::Ipv4Addr::LOCALHOST.into() } }
    } => {
        #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)] pub struct T { pub ip: std::net::Ipv6Addr }
        pub fn value() -> T { T { ip: std::net::Ipv6Addr::LOCALHOST } }
    }
    json_value: {
        #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)] pub struct T { pub meta: serde_json::Value, pub id: u32 }
        pub fn value() -> T { T { meta: serde_json::json!({"a": 1}), id: 1 } }
    } => {
        #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)] pub struct T { pub meta: serde_json::Value, pub id: u64 }
        pub fn value() -> T { T { meta: serde_json::json!({"a": 1}), id: 1 } }
    }
    json_value_to_struct: {
        pub type T = serde_json::Value;
        pub fn value() -> T { serde_json::json!({"name": "Jason", "age": 25}) }
    } => {
        #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)] pub struct T { pub name: String, pub age: u8 }
        pub fn value() -> T { T { name: "Jason".into(), age: 25 } }
    }
    generic_wrapper: {
        #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)] pub struct Wrapper<X> { pub inner: X }
        pub type T = Wrapper<u32>;
        pub fn value() -> T { Wrapper { inner: 7 } }
    } => {
        #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)] pub struct Wrapper<X> { pub inner: X }
        pub type T = Wrapper<i32>;
        pub fn value() -> T { Wrapper { inner: 7 } }
    }
}

fn spec(name: &'static str) -> MemoSpec {
    MemoSpec::new(name)
}

fn write<T: logcache::Value>(cache: &Cache, name: &'static str, value: T) {
    cache.namespace(name).set("k", &value).unwrap();
    let stored: T = memo::memoize(cache, &spec(name), &("args",), || value.clone());
    let _ = stored;
}

/// The old entry is never returned as the new type: `get` is `Error::Decode`, the memoized
/// function computes afresh.
fn refused<T: logcache::Value + PartialEq + std::fmt::Debug>(
    cache: &Cache,
    name: &'static str,
    new: T,
) -> bool {
    let get_refused = matches!(
        cache.namespace(name).get::<T>("k"),
        Err(Error::Decode { .. })
    );
    let computed = AtomicUsize::new(0);
    let got: T = memo::memoize(cache, &spec(name), &("args",), || {
        computed.fetch_add(1, Ordering::SeqCst);
        new.clone()
    });
    get_refused && computed.load(Ordering::SeqCst) == 1 && got == new
}

/// The unchanged type still hits, with `get` and memoization.
fn hits<T: logcache::Value + PartialEq + std::fmt::Debug>(
    cache: &Cache,
    name: &'static str,
    old: T,
) -> bool {
    let got = cache.namespace(name).get::<T>("k").unwrap();
    let memoized: T = memo::memoize(cache, &spec(name), &("args",), || {
        panic!("{name}: an unchanged type recomputed")
    });
    got.as_ref() == Some(&old) && memoized == old
}

fn child(dir: &Path) {
    let cache = Cache::open(dir).unwrap();
    let results = read_all(&cache);
    let failed: Vec<_> = results
        .iter()
        .filter(|(_, refused, hit)| !refused || !hit)
        .collect();
    assert!(
        failed.is_empty(),
        "(case, refused as the new type, hit as the old): {failed:?}"
    );
    println!("CHILD OK: {} cases", results.len());
}

#[test]
fn old_entries_are_never_read_as_a_changed_type() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        return child(Path::new(&dir));
    }
    let dir = tempfile::tempdir().unwrap();
    {
        let cache = Cache::open(dir.path()).unwrap();
        write_all(&cache);
        cache.flush().unwrap();
    }
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "old_entries_are_never_read_as_a_changed_type",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("CHILD OK: 18 cases"),
        "second process failed:\n{stdout}\n{stderr}"
    );
}
