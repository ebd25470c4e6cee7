//! The value encodings the typed cache could use, side by side: what each round trips, how
//! large and how fast.
//!
//! ```text
//! cargo run --release -p logcache-benches --bin codec -- [ITERATIONS]
//! ```
//! For the quickstart's `UserDetail`, the same data as a `serde_json::Value`, an enum-carrying
//! struct, and the shapes that need a self-describing encoding (an untagged enum, an
//! internally tagged enum, `flatten`, `skip_serializing_if`, `Some(None)`), each encoding:
//! whether the value comes back equal, its size in bytes, and nanoseconds per encode (into a
//! reused buffer, as the cache does) and per decode. Encodings: bincode 2 (standard), rmp-serde
//! (MessagePack with field names), serde_json, and logcache's own (MessagePack, `Some` kept).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use logcache_benches::values::{Labeled, Sentiment, UserDetail};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(untagged)]
enum Untagged {
    Number(i64),
    Text(String),
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(tag = "type")]
enum Internal {
    Message { content: String },
    Stop,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Flattened {
    id: u32,
    #[serde(flatten)]
    rest: BTreeMap<String, u32>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Sparse {
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<String>,
    name: String,
}

/// One encoding: encode into a buffer, decode from bytes.
struct Codec {
    name: &'static str,
    encode: fn(&dyn erased::Value, &mut Vec<u8>) -> Result<(), String>,
}

mod erased {
    /// A value any of the encoders can take.
    pub trait Value {
        fn bincode(&self, out: &mut Vec<u8>) -> Result<(), String>;
        fn rmp(&self, out: &mut Vec<u8>) -> Result<(), String>;
        fn json(&self, out: &mut Vec<u8>) -> Result<(), String>;
        fn logcache(&self, out: &mut Vec<u8>) -> Result<(), String>;
    }

    impl<T: serde::Serialize> Value for T {
        fn bincode(&self, out: &mut Vec<u8>) -> Result<(), String> {
            bincode::serde::encode_into_std_write(self, out, bincode::config::standard())
                .map(drop)
                .map_err(|e| e.to_string())
        }
        fn rmp(&self, out: &mut Vec<u8>) -> Result<(), String> {
            rmp_serde::encode::write_named(out, self).map_err(|e| e.to_string())
        }
        fn json(&self, out: &mut Vec<u8>) -> Result<(), String> {
            serde_json::to_writer(out, self).map_err(|e| e.to_string())
        }
        fn logcache(&self, out: &mut Vec<u8>) -> Result<(), String> {
            logcache::inspect::encode_value_into(self, out).map_err(|e| e.to_string())
        }
    }
}

const CODECS: [Codec; 4] = [
    Codec {
        name: "bincode 2",
        encode: |v, out| v.bincode(out),
    },
    Codec {
        name: "rmp-serde (named)",
        encode: |v, out| v.rmp(out),
    },
    Codec {
        name: "serde_json",
        encode: |v, out| v.json(out),
    },
    Codec {
        name: "logcache",
        encode: |v, out| v.logcache(out),
    },
];

fn decode<T: DeserializeOwned>(codec: &str, bytes: &[u8]) -> Result<T, String> {
    match codec {
        "bincode 2" => bincode::serde::decode_from_slice(bytes, bincode::config::standard())
            .map(|(v, _)| v)
            .map_err(|e| e.to_string()),
        "rmp-serde (named)" => rmp_serde::from_slice(bytes).map_err(|e| e.to_string()),
        "serde_json" => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
        _ => logcache::inspect::decode(bytes).map_err(|e| e.to_string()),
    }
}

/// One cell per codec: `ok size encode/decode ns`, or why it does not round trip.
fn row<T: Serialize + DeserializeOwned + PartialEq>(name: &str, value: &T, iterations: u32) {
    let mut cells = Vec::new();
    for codec in &CODECS {
        let mut bytes = Vec::new();
        if let Err(e) = (codec.encode)(value, &mut bytes) {
            cells.push(format!("encode fails ({})", short(&e)));
            continue;
        }
        match decode::<T>(codec.name, &bytes) {
            Err(e) => cells.push(format!("decode fails ({})", short(&e))),
            Ok(back) if back != *value => cells.push("**a different value**".into()),
            Ok(_) => {
                let mut buf = Vec::with_capacity(bytes.len() * 2);
                let started = Instant::now();
                for _ in 0..iterations {
                    buf.clear();
                    (codec.encode)(black_box(value), &mut buf).unwrap();
                }
                let encode = started.elapsed().as_nanos() as f64 / f64::from(iterations);
                let started = Instant::now();
                for _ in 0..iterations {
                    black_box(decode::<T>(codec.name, black_box(&bytes)).unwrap());
                }
                let decode = started.elapsed().as_nanos() as f64 / f64::from(iterations);
                cells.push(format!("{} B, {encode:.0} / {decode:.0} ns", bytes.len()));
            }
        }
    }
    println!("| {name} | {} |", cells.join(" | "));
}

fn short(e: &str) -> String {
    e.chars().take(40).collect()
}

fn main() {
    let iterations: u32 = std::env::args()
        .nth(1)
        .map_or(1_000_000, |a| a.parse().expect("ITERATIONS"));
    println!(
        "Command: cargo run --release -p logcache-benches --bin codec -- {iterations}; size, then ns per encode / decode\n"
    );
    let names: Vec<&str> = CODECS.iter().map(|c| c.name).collect();
    println!("| value | {} |", names.join(" | "));
    println!("|---|{}", "---|".repeat(names.len()));
    row(
        "`UserDetail`",
        &UserDetail {
            name: "User number 123456".into(),
            age: 56,
        },
        iterations,
    );
    row(
        "`serde_json::Value`",
        &serde_json::json!({"name": "User number 123456", "age": 56}),
        iterations,
    );
    row(
        "enum-carrying struct",
        &Labeled {
            label: "Review nr 123456".into(),
            sentiment: Sentiment::Mixed { score: 3 },
        },
        iterations,
    );
    row(
        "`#[serde(untagged)]`",
        &vec![Untagged::Number(-3), Untagged::Text("t".into())],
        iterations,
    );
    row(
        "`#[serde(tag = \"type\")]`",
        &vec![
            Internal::Message {
                content: "hi".into(),
            },
            Internal::Stop,
        ],
        iterations,
    );
    row(
        "`#[serde(flatten)]`",
        &Flattened {
            id: 1,
            rest: BTreeMap::from([("a".into(), 2)]),
        },
        iterations,
    );
    row(
        "`skip_serializing_if`",
        &Sparse {
            email: None,
            name: "n".into(),
        },
        iterations,
    );
    row("`Some(None)`", &Some(None::<u8>), iterations);
}
