//! Fingerprints tell every change of shape apart, and stay the same for the same type.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::num::NonZeroU32;

use serde::Deserialize;

use super::*;

/// Declares `before::T` and `after::T` and checks that their fingerprints differ.
macro_rules! changed {
    ($name:ident, { $($before:item)* }, { $($after:item)* }) => {
        #[allow(dead_code)]
        mod $name {
            pub mod before {
                use serde::Deserialize;
                $($before)*
            }
            pub mod after {
                use serde::Deserialize;
                $($after)*
            }
        }
    };
}

changed!(
    field_added,
    {
        #[derive(Deserialize)]
        pub struct T {
            pub name: String,
            pub age: u8,
        }
    },
    {
        #[derive(Deserialize)]
        pub struct T {
            pub name: String,
            pub age: u8,
            pub email: Option<String>,
        }
    }
);
changed!(
    field_removed,
    {
        #[derive(Deserialize)]
        pub struct T {
            pub name: String,
            pub age: u8,
        }
    },
    {
        #[derive(Deserialize)]
        pub struct T {
            pub name: String,
        }
    }
);
changed!(
    field_renamed,
    {
        #[derive(Deserialize)]
        pub struct T {
            pub name: String,
            pub age: u8,
        }
    },
    {
        #[derive(Deserialize)]
        pub struct T {
            pub full_name: String,
            pub age: u8,
        }
    }
);
changed!(
    u32_to_i32,
    {
        #[derive(Deserialize)]
        pub struct T {
            pub score: u32,
        }
    },
    {
        #[derive(Deserialize)]
        pub struct T {
            pub score: i32,
        }
    }
);
changed!(
    u8_to_u32,
    {
        #[derive(Deserialize)]
        pub struct T {
            pub age: u8,
        }
    },
    {
        #[derive(Deserialize)]
        pub struct T {
            pub age: u32,
        }
    }
);
changed!(
    string_to_bytes,
    {
        #[derive(Deserialize)]
        pub struct T {
            pub body: String,
        }
    },
    {
        #[derive(Deserialize)]
        pub struct T {
            pub body: Vec<u8>,
        }
    }
);
changed!(
    variant_added,
    {
        #[derive(Deserialize)]
        pub enum T {
            Positive,
            Negative,
        }
    },
    {
        #[derive(Deserialize)]
        pub enum T {
            Positive,
            Negative,
            Neutral,
        }
    }
);
changed!(
    variant_removed,
    {
        #[derive(Deserialize)]
        pub enum T {
            Positive,
            Negative,
            Neutral,
        }
    },
    {
        #[derive(Deserialize)]
        pub enum T {
            Positive,
            Negative,
        }
    }
);
changed!(
    variant_reordered,
    {
        #[derive(Deserialize)]
        pub enum T {
            Positive,
            Negative,
        }
    },
    {
        #[derive(Deserialize)]
        pub enum T {
            Negative,
            Positive,
        }
    }
);
changed!(
    variant_renamed,
    {
        #[derive(Deserialize)]
        pub enum T {
            Positive,
            Negative,
        }
    },
    {
        #[derive(Deserialize)]
        pub enum T {
            Positive,
            Bad,
        }
    }
);
changed!(
    nested_enum_field_retyped,
    {
        #[derive(Deserialize)]
        pub enum Sentiment {
            Positive,
            Negative,
        }
        #[derive(Deserialize)]
        pub enum Kind {
            Plain,
            Scored { sentiment: Sentiment, score: u32 },
        }
        #[derive(Deserialize)]
        pub struct T {
            pub kind: Kind,
        }
    },
    {
        #[derive(Deserialize)]
        pub enum Sentiment {
            Positive,
            Negative,
        }
        #[derive(Deserialize)]
        pub enum Kind {
            Plain,
            Scored { sentiment: Sentiment, score: i32 },
        }
        #[derive(Deserialize)]
        pub struct T {
            pub kind: Kind,
        }
    }
);
changed!(
    deep_variant_content_retyped,
    {
        #[derive(Deserialize)]
        pub enum Inner {
            A,
            B(u8),
            C { x: u16 },
        }
        #[derive(Deserialize)]
        pub enum Outer {
            One,
            Two(Inner),
            Three(Option<Inner>),
        }
        #[derive(Deserialize)]
        pub struct T {
            pub v: Vec<Outer>,
        }
    },
    {
        #[derive(Deserialize)]
        pub enum Inner {
            A,
            B(u8),
            C { x: u32 },
        }
        #[derive(Deserialize)]
        pub enum Outer {
            One,
            Two(Inner),
            Three(Option<Inner>),
        }
        #[derive(Deserialize)]
        pub struct T {
            pub v: Vec<Outer>,
        }
    }
);
changed!(
    option_enum,
    {
        #[derive(Deserialize)]
        pub enum E {
            A(u8),
            B,
        }
        #[derive(Deserialize)]
        pub struct T {
            pub e: Option<E>,
        }
    },
    {
        #[derive(Deserialize)]
        pub enum E {
            A(i8),
            B,
        }
        #[derive(Deserialize)]
        pub struct T {
            pub e: Option<E>,
        }
    }
);
changed!(
    vec_enum,
    {
        #[derive(Deserialize)]
        pub enum E {
            A,
            B { s: String },
        }
        #[derive(Deserialize)]
        pub struct T {
            pub e: Vec<E>,
        }
    },
    {
        #[derive(Deserialize)]
        pub enum E {
            A,
            B { text: String },
        }
        #[derive(Deserialize)]
        pub struct T {
            pub e: Vec<E>,
        }
    }
);
changed!(
    renamed_field_inside_vec_and_enum,
    {
        #[derive(Deserialize)]
        pub struct Inner {
            pub a: u8,
        }
        #[derive(Deserialize)]
        pub enum E {
            X,
            Y(u8),
        }
        #[derive(Deserialize)]
        pub struct T {
            pub v: Vec<Inner>,
            pub e: E,
        }
    },
    {
        #[derive(Deserialize)]
        pub struct Inner {
            pub b: u8,
        }
        #[derive(Deserialize)]
        pub enum E {
            X,
            Y(u8),
        }
        #[derive(Deserialize)]
        pub struct T {
            pub v: Vec<Inner>,
            pub e: E,
        }
    }
);
changed!(
    non_zero,
    {
        #[derive(Deserialize)]
        pub struct T {
            pub n: std::num::NonZeroU32,
            pub label: String,
        }
    },
    {
        #[derive(Deserialize)]
        pub struct T {
            pub n: std::num::NonZeroU32,
            pub name: String,
        }
    }
);
changed!(
    non_zero_widened,
    {
        #[derive(Deserialize)]
        pub struct T {
            pub n: std::num::NonZeroU32,
        }
    },
    {
        #[derive(Deserialize)]
        pub struct T {
            pub n: std::num::NonZeroU64,
        }
    }
);
changed!(
    ip_addr,
    {
        #[derive(Deserialize)]
        pub struct T {
            pub ip: std::net::IpAddr,
        }
    },
    {
        #[derive(Deserialize)]
        pub struct T {
            pub ip: std::net::Ipv4Addr,
        }
    }
);
changed!(
    json_value,
    {
        #[derive(Deserialize)]
        pub struct T {
            pub meta: serde_json::Value,
        }
    },
    {
        #[derive(Deserialize)]
        pub struct T {
            pub meta: String,
        }
    }
);
changed!(
    json_value_field_renamed,
    {
        #[derive(Deserialize)]
        pub struct T {
            pub meta: serde_json::Value,
            pub id: u32,
        }
    },
    {
        #[derive(Deserialize)]
        pub struct T {
            pub meta: serde_json::Value,
            pub key: u32,
        }
    }
);
changed!(
    generic_wrapper,
    {
        #[derive(Deserialize)]
        pub struct Wrapper<X> {
            pub inner: X,
        }
        pub type T = Wrapper<u32>;
    },
    {
        #[derive(Deserialize)]
        pub struct Wrapper<X> {
            pub inner: X,
        }
        pub type T = Wrapper<i32>;
    }
);
changed!(
    nested_generic_wrapper,
    {
        #[derive(Deserialize)]
        pub struct W<X> {
            pub inner: X,
        }
        pub type T = W<W<u8>>;
    },
    {
        #[derive(Deserialize)]
        pub struct W<X> {
            pub inner: X,
        }
        pub type T = W<W<String>>;
    }
);
changed!(
    recursive,
    {
        #[derive(Deserialize)]
        pub struct T {
            pub label: String,
            pub children: Vec<T>,
        }
    },
    {
        #[derive(Deserialize)]
        pub struct T {
            pub name: String,
            pub children: Vec<T>,
        }
    }
);
changed!(
    recursive_enum,
    {
        #[derive(Deserialize)]
        pub enum T {
            Lit(i64),
            Neg(Box<T>),
            Add(Box<T>, Box<T>),
        }
    },
    {
        #[derive(Deserialize)]
        pub enum T {
            Lit(i32),
            Neg(Box<T>),
            Add(Box<T>, Box<T>),
        }
    }
);
changed!(
    recursive_list,
    {
        #[derive(Deserialize)]
        pub enum T {
            Cons(u8, Box<T>),
            Nil,
        }
    },
    {
        #[derive(Deserialize)]
        pub enum T {
            Cons(u16, Box<T>),
            Nil,
        }
    }
);
changed!(
    untagged_field_after,
    {
        #[derive(Deserialize)]
        #[serde(untagged)]
        pub enum U {
            N(i64),
            S(String),
        }
        #[derive(Deserialize)]
        pub struct T {
            pub id: u32,
            pub u: U,
        }
    },
    {
        #[derive(Deserialize)]
        #[serde(untagged)]
        pub enum U {
            N(i64),
            S(String),
        }
        #[derive(Deserialize)]
        pub struct T {
            pub key: u32,
            pub u: U,
        }
    }
);
changed!(
    same_named_enums_both_explored,
    {
        pub mod a {
            #[derive(serde::Deserialize)]
            pub enum Kind {
                X,
                Y(u8),
            }
        }
        pub mod b {
            #[derive(serde::Deserialize)]
            pub enum Kind {
                X,
                Y(u8),
            }
        }
        #[derive(Deserialize)]
        pub struct T {
            pub a: a::Kind,
            pub b: b::Kind,
        }
    },
    {
        pub mod a {
            #[derive(serde::Deserialize)]
            pub enum Kind {
                X,
                Y(u8),
            }
        }
        pub mod b {
            #[derive(serde::Deserialize)]
            pub enum Kind {
                X,
                Y(u16),
            }
        }
        #[derive(Deserialize)]
        pub struct T {
            pub a: a::Kind,
            pub b: b::Kind,
        }
    }
);

#[test]
fn every_change_of_shape_changes_the_fingerprint() {
    let pairs: Vec<(&str, u64, u64)> = vec![
        (
            "field added",
            type_fingerprint::<field_added::before::T>(),
            type_fingerprint::<field_added::after::T>(),
        ),
        (
            "field removed",
            type_fingerprint::<field_removed::before::T>(),
            type_fingerprint::<field_removed::after::T>(),
        ),
        (
            "field renamed",
            type_fingerprint::<field_renamed::before::T>(),
            type_fingerprint::<field_renamed::after::T>(),
        ),
        (
            "u32 to i32",
            type_fingerprint::<u32_to_i32::before::T>(),
            type_fingerprint::<u32_to_i32::after::T>(),
        ),
        (
            "u8 to u32",
            type_fingerprint::<u8_to_u32::before::T>(),
            type_fingerprint::<u8_to_u32::after::T>(),
        ),
        (
            "String to Vec<u8>",
            type_fingerprint::<string_to_bytes::before::T>(),
            type_fingerprint::<string_to_bytes::after::T>(),
        ),
        (
            "variant added",
            type_fingerprint::<variant_added::before::T>(),
            type_fingerprint::<variant_added::after::T>(),
        ),
        (
            "variant removed",
            type_fingerprint::<variant_removed::before::T>(),
            type_fingerprint::<variant_removed::after::T>(),
        ),
        (
            "variants reordered",
            type_fingerprint::<variant_reordered::before::T>(),
            type_fingerprint::<variant_reordered::after::T>(),
        ),
        (
            "variant renamed",
            type_fingerprint::<variant_renamed::before::T>(),
            type_fingerprint::<variant_renamed::after::T>(),
        ),
        (
            "nested enum's field retyped",
            type_fingerprint::<nested_enum_field_retyped::before::T>(),
            type_fingerprint::<nested_enum_field_retyped::after::T>(),
        ),
        (
            "deep variant content retyped",
            type_fingerprint::<deep_variant_content_retyped::before::T>(),
            type_fingerprint::<deep_variant_content_retyped::after::T>(),
        ),
        (
            "Option<Enum>",
            type_fingerprint::<option_enum::before::T>(),
            type_fingerprint::<option_enum::after::T>(),
        ),
        (
            "Vec<Enum>",
            type_fingerprint::<vec_enum::before::T>(),
            type_fingerprint::<vec_enum::after::T>(),
        ),
        (
            "renamed field in Vec<Inner> beside an enum",
            type_fingerprint::<renamed_field_inside_vec_and_enum::before::T>(),
            type_fingerprint::<renamed_field_inside_vec_and_enum::after::T>(),
        ),
        (
            "NonZeroU32 beside a renamed field",
            type_fingerprint::<non_zero::before::T>(),
            type_fingerprint::<non_zero::after::T>(),
        ),
        (
            "NonZeroU32 to NonZeroU64",
            type_fingerprint::<non_zero_widened::before::T>(),
            type_fingerprint::<non_zero_widened::after::T>(),
        ),
        (
            "IpAddr to Ipv4Addr",
            type_fingerprint::<ip_addr::before::T>(),
            type_fingerprint::<ip_addr::after::T>(),
        ),
        (
            "serde_json::Value to String",
            type_fingerprint::<json_value::before::T>(),
            type_fingerprint::<json_value::after::T>(),
        ),
        (
            "field renamed beside a serde_json::Value",
            type_fingerprint::<json_value_field_renamed::before::T>(),
            type_fingerprint::<json_value_field_renamed::after::T>(),
        ),
        (
            "generic wrapper",
            type_fingerprint::<generic_wrapper::before::T>(),
            type_fingerprint::<generic_wrapper::after::T>(),
        ),
        (
            "generic wrapper in a wrapper",
            type_fingerprint::<nested_generic_wrapper::before::T>(),
            type_fingerprint::<nested_generic_wrapper::after::T>(),
        ),
        (
            "recursive struct",
            type_fingerprint::<recursive::before::T>(),
            type_fingerprint::<recursive::after::T>(),
        ),
        (
            "recursive enum",
            type_fingerprint::<recursive_enum::before::T>(),
            type_fingerprint::<recursive_enum::after::T>(),
        ),
        (
            "recursive list",
            type_fingerprint::<recursive_list::before::T>(),
            type_fingerprint::<recursive_list::after::T>(),
        ),
        (
            "field renamed before an untagged enum",
            type_fingerprint::<untagged_field_after::before::T>(),
            type_fingerprint::<untagged_field_after::after::T>(),
        ),
        (
            "one of two same-named enums",
            type_fingerprint::<same_named_enums_both_explored::before::T>(),
            type_fingerprint::<same_named_enums_both_explored::after::T>(),
        ),
    ];
    let missed: Vec<&str> = pairs
        .iter()
        .filter(|(_, a, b)| a == b)
        .map(|(n, ..)| *n)
        .collect();
    assert!(
        missed.is_empty(),
        "changes the fingerprint missed: {missed:?}"
    );
    // And the types themselves are all told apart from each other.
    let mut all: Vec<u64> = pairs.iter().flat_map(|(_, a, b)| [*a, *b]).collect();
    let n = all.len();
    all.sort_unstable();
    all.dedup();
    assert!(
        all.len() >= n - 6,
        "distinct fingerprints: {} of {n}",
        all.len()
    );
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct UserDetail {
    name: String,
    age: u8,
}

#[derive(Deserialize)]
#[allow(dead_code)]
enum Sentiment {
    Positive,
    Negative,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct Review {
    sentiment: Sentiment,
    score: u32,
}

/// The descriptions are part of the stored format: changing how a type is described
/// invalidates every cached entry, so these pin it.
#[test]
fn descriptions_are_pinned() {
    assert_eq!(describe::<UserDetail>(), "UserDetail{name:str,age:u8}");
    assert_eq!(
        describe::<Review>(),
        "Review{sentiment:enum Sentiment[Positive,Negative]{0:unit,1:unit},score:u32}"
    );
    assert_eq!(describe::<(u8, String)>(), "(u8,str)");
    assert_eq!(describe::<Option<Vec<u64>>>(), "option<seq<u64>>");
    assert_eq!(
        describe::<BTreeMap<String, Option<bool>>>(),
        "map<str,option<bool>>"
    );
    assert_eq!(
        describe::<IpAddr>(),
        "enum IpAddr[V4,V6]{0:((u8,u8,u8,u8)),1:((u8,u8,u8,u8,u8,u8,u8,u8,u8,u8,u8,u8,u8,u8,u8,u8))}"
    );
    assert_eq!(describe::<NonZeroU32>(), "u32");
    assert_eq!(
        describe::<serde_json::Value>(),
        "any | partly traced: serde_json::value::Value"
    );
}

#[test]
fn fully_traced_types_say_nothing_of_their_name() {
    for (text, complete) in [
        (describe::<Review>(), true),
        (describe::<Option<Sentiment>>(), true),
        (describe::<Vec<IpAddr>>(), true),
        (describe::<recursive_enum::before::T>(), true),
        (describe::<recursive_list::before::T>(), true),
        (describe::<recursive::before::T>(), true),
        (describe::<HashMap<String, serde_json::Value>>(), false),
        (describe::<untagged_field_after::before::T>(), false),
    ] {
        assert_eq!(!text.contains("partly traced"), complete, "{text}");
    }
    // What was traced before the untraceable part is kept.
    let partial = describe::<untagged_field_after::before::T>();
    assert!(partial.starts_with("T{id:u32,u:any}"), "{partial}");
}

#[test]
fn the_fingerprint_is_stable() {
    assert_eq!(type_fingerprint::<Review>(), type_fingerprint::<Review>());
    assert_eq!(
        type_fingerprint::<Review>(),
        stable_hash(describe::<Review>().as_bytes())
    );
    assert_eq!(stable_hash(b"logcache"), stable_hash(b"logcache"));
    assert_ne!(type_fingerprint::<u32>(), type_fingerprint::<i32>());
    assert_ne!(type_fingerprint::<String>(), type_fingerprint::<Vec<u8>>());
}

/// A type whose `Deserialize` panics on made-up input is partly traced, not a crash.
#[test]
fn a_panicking_deserialize_is_partly_traced() {
    #[allow(dead_code)]
    struct Picky(u8);
    impl<'de> Deserialize<'de> for Picky {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let n = u8::deserialize(d)?;
            assert!(n > 100, "Picky refuses {n}");
            Ok(Picky(n))
        }
    }
    // Its own shape was traced before it panicked...
    assert_eq!(describe::<Picky>(), "u8");
    // ...but the panic cut the trace of what holds it.
    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Holder {
        p: Picky,
        after: String,
    }
    let text = describe::<Holder>();
    assert!(text.contains("partly traced"), "{text}");
}

/// Enums with many variants, nested, are explored to the end.
#[test]
fn wide_nested_enums_are_explored_fully() {
    #[derive(Deserialize)]
    #[allow(dead_code)]
    enum Leaf {
        A(u8),
        B(u16),
        C(u32),
        D(u64),
        E(i8),
        F(i16),
        G(i32),
        H(i64),
    }
    #[derive(Deserialize)]
    #[allow(dead_code)]
    enum Mid {
        P(Leaf),
        Q(Option<Leaf>),
        R {
            l: Vec<Leaf>,
            m: BTreeMap<String, Leaf>,
        },
    }
    let text = describe::<(Mid, Mid)>();
    assert!(
        !text.contains("partly traced") && !text.contains('?'),
        "{text}"
    );
    assert_eq!(text.matches("7:(i64)").count(), 8, "{text}");
}

#[test]
fn recursive_types_are_cut_after_two_levels() {
    assert_eq!(
        describe::<recursive::before::T>(),
        "T{label:str,children:seq<T{label:str,children:seq<^T>}>}"
    );
    let list = describe::<recursive_list::before::T>();
    assert_eq!(
        list,
        "enum T[Cons,Nil]{0:(u8,enum T[Cons,Nil]{0:(u8,^T),1:unit}),1:unit}"
    );
}
