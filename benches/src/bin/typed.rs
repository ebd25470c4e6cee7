//! The typed cache against the raw engine, the memory backend and a `HashMap`, in one run.
//!
//! ```text
//! cargo run --release -p logcache-benches --bin typed -- [KEYS] [REPETITIONS]
//! ```
//! KEYS (default 200,000) values under `"user:N"` keys, for three value types of about the same
//! encoded size: the quickstart's `UserDetail { name, age }`, the same data as a
//! `serde_json::Value`, and a struct carrying an enum (`Labeled { label, sentiment }`).
//! - raw: `Store::put`/`get` of the key bytes and the value's encoded bytes, encoded
//!   beforehand (what the engine does when nothing is typed);
//! - typed disk: `Cache::set`/`get` on the same engine (key and value encoding, type
//!   fingerprint, envelope, namespace generation, statistics on top);
//! - typed memory: `set`, then `get` twice (the first decodes, the second clones the value kept);
//! - memoized hit: a `#[memoize]` function on a memory cache, called a third time with each
//!   key (the first computes, the second decodes the stored value and keeps it), against a
//!   `HashMap<String, V>` get and clone of the same values;
//! - typed Redis over loopback (if `LOGCACHE_REDIS_URL` is set), `UserDetail` on the first
//!   20,000 keys, one round trip per operation, against the two-round-trip path (a backend
//!   that leaves reading the generation to the cache), a raw `GET` loop of the same number of
//!   values, and the typed disk cache on the same keys.
//!
//! `Durability::None` for both disk runs. Median (min–max) of REPETITIONS runs (default 3).

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::LazyLock;
use std::time::Duration;

use logcache::{Cache, CacheBuilder, MemoryLimit, memoize};
use logcache_benches::values::{Labeled, Sentiment, UserDetail};
use logcache_benches::{Spread, ops_per_sec, time};
use logcache_engine::{Durability, Options, Store};

/// A value type under test.
trait Kind: logcache::Value {
    const NAME: &'static str;
    fn make(i: usize) -> Self;
    /// The memoized function returning this type, called with `key`.
    fn memoized(key: &str) -> Self;
}

fn index(key: &str) -> usize {
    key.trim_start_matches("user:").parse().expect("user:N")
}

impl Kind for UserDetail {
    const NAME: &'static str = "`UserDetail`";
    fn make(i: usize) -> Self {
        UserDetail {
            name: format!("User number {i}"),
            age: (i % 100) as u8,
        }
    }
    fn memoized(key: &str) -> Self {
        memo_user(key)
    }
}

impl Kind for serde_json::Value {
    const NAME: &'static str = "`serde_json::Value`";
    fn make(i: usize) -> Self {
        serde_json::json!({ "name": format!("User number {i}"), "age": i % 100 })
    }
    fn memoized(key: &str) -> Self {
        memo_json(key)
    }
}

impl Kind for Labeled {
    const NAME: &'static str = "enum-carrying struct";
    fn make(i: usize) -> Self {
        Labeled {
            label: format!("Review nr {i}"),
            sentiment: match i % 3 {
                0 => Sentiment::Positive,
                1 => Sentiment::Negative,
                _ => Sentiment::Mixed {
                    score: (i % 100) as u8,
                },
            },
        }
    }
    fn memoized(key: &str) -> Self {
        memo_labeled(key)
    }
}

/// One memory cache per value type, so that each type's run starts on a cache of its own.
static MEMO_USER: LazyLock<Cache> = LazyLock::new(|| Cache::memory(1 << 20));
static MEMO_JSON: LazyLock<Cache> = LazyLock::new(|| Cache::memory(1 << 20));
static MEMO_LABELED: LazyLock<Cache> = LazyLock::new(|| Cache::memory(1 << 20));

#[memoize(cache = MEMO_USER)]
fn memo_user(key: &str) -> UserDetail {
    UserDetail::make(index(key))
}

#[memoize(cache = MEMO_JSON)]
fn memo_json(key: &str) -> serde_json::Value {
    serde_json::Value::make(index(key))
}

#[memoize(cache = MEMO_LABELED)]
fn memo_labeled(key: &str) -> Labeled {
    Labeled::make(index(key))
}

fn engine_options() -> Options {
    Options::default()
        .durability(Durability::None)
        .auto_compaction(false)
}

/// What is measured per value type, in ops/s.
const RAW_SET: usize = 0;
const RAW_GET: usize = 1;
const DISK_SET: usize = 2;
const DISK_GET: usize = 3;
const DISK_HIT: usize = 4;
const MEM_SET: usize = 5;
const MEM_FIRST: usize = 6;
const MEM_AGAIN: usize = 7;
const MEMO_HIT: usize = 8;
const HASHMAP: usize = 9;
const MEASURES: usize = 10;

fn measure<V: Kind>(keys: &[String], reps: usize, base: &str) -> Vec<Spread> {
    let n = keys.len();
    let values: Vec<V> = (0..n).map(V::make).collect();
    let encoded: Vec<Vec<u8>> = values
        .iter()
        .map(|v| logcache::inspect::encode_value(v).unwrap())
        .collect();
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); MEASURES];
    for rep in 0..reps {
        eprintln!("{}: repetition {}/{reps}", V::NAME, rep + 1);
        let tmp = tempfile::tempdir_in(base).unwrap();
        let mut record = |what: usize, d| samples[what].push(ops_per_sec(n, d));

        let store = Store::open(tmp.path().join("raw"), engine_options()).unwrap();
        record(
            RAW_SET,
            time(|| {
                for (k, v) in keys.iter().zip(&encoded) {
                    store.put(k.as_bytes(), v).unwrap();
                }
            })
            .0,
        );
        record(
            RAW_GET,
            time(|| {
                for k in keys {
                    black_box(store.get(k.as_bytes()).unwrap().unwrap());
                }
            })
            .0,
        );
        drop(store);

        let disk = CacheBuilder::new()
            .disk(tmp.path().join("typed"))
            .engine_options(engine_options())
            .build()
            .unwrap();
        record(
            DISK_SET,
            time(|| {
                for (k, v) in keys.iter().zip(&values) {
                    disk.set(k.as_str(), v).unwrap();
                }
            })
            .0,
        );
        record(
            DISK_GET,
            time(|| {
                for k in keys {
                    black_box(disk.get::<V>(k.as_str()).unwrap().unwrap());
                }
            })
            .0,
        );
        record(
            DISK_HIT,
            time(|| {
                for (k, v) in keys.iter().zip(&values) {
                    black_box(disk.get_or_insert_with(k.as_str(), || v.clone()).unwrap());
                }
            })
            .0,
        );
        drop(disk);

        let memory = CacheBuilder::new()
            .memory(MemoryLimit::Entries(2 * n))
            .build()
            .unwrap();
        record(
            MEM_SET,
            time(|| {
                for (k, v) in keys.iter().zip(&values) {
                    memory.set(k.as_str(), v).unwrap();
                }
            })
            .0,
        );
        for what in [MEM_FIRST, MEM_AGAIN] {
            record(
                what,
                time(|| {
                    for k in keys {
                        black_box(memory.get::<V>(k.as_str()).unwrap().unwrap());
                    }
                })
                .0,
            );
        }
        drop(memory);

        // Compute and store, then read once (the first read decodes and keeps the value).
        for _ in 0..2 {
            for k in keys {
                black_box(V::memoized(k));
            }
        }
        record(
            MEMO_HIT,
            time(|| {
                for k in keys {
                    black_box(V::memoized(k));
                }
            })
            .0,
        );
        let map: HashMap<String, V> = keys.iter().cloned().zip(values.iter().cloned()).collect();
        record(
            HASHMAP,
            time(|| {
                for k in keys {
                    black_box(map.get(k.as_str()).cloned().unwrap());
                }
            })
            .0,
        );
        for (cache, ns) in [
            (&MEMO_USER, "typed::memo_user"),
            (&MEMO_JSON, "typed::memo_json"),
            (&MEMO_LABELED, "typed::memo_labeled"),
        ] {
            let ns = cache.namespace(ns);
            ns.clear().unwrap();
            ns.vacuum().unwrap();
        }
    }
    samples.iter().map(|s| Spread::of(s)).collect()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map_or(200_000, |a| a.parse().expect("KEYS"));
    let reps: usize = args.next().map_or(3, |a| a.parse().expect("REPETITIONS"));
    let base = std::env::var("LOGCACHE_BENCH_DIR").unwrap_or_else(|_| "target".into());
    std::fs::create_dir_all(&base).unwrap();
    let keys: Vec<String> = (0..n).map(|i| format!("user:{i}")).collect();

    let results = [
        (UserDetail::NAME, measure::<UserDetail>(&keys, reps, &base)),
        (
            serde_json::Value::NAME,
            measure::<serde_json::Value>(&keys, reps, &base),
        ),
        (Labeled::NAME, measure::<Labeled>(&keys, reps, &base)),
    ];
    let redis = std::env::var("LOGCACHE_REDIS_URL").ok().map(|url| {
        let cluster = std::env::var("LOGCACHE_REDIS_CLUSTER_URLS")
            .ok()
            .map(|urls| urls.split(',').map(str::to_string).collect::<Vec<_>>());
        (
            redis_vs_disk(&url, cluster.as_deref(), &base, &keys, reps),
            cluster.is_some(),
        )
    });

    println!(
        "Command: cargo run --release -p logcache-benches --bin typed -- {n} {reps}; median (min–max) of {reps} runs, Mops/s\n"
    );
    println!(
        "| value | raw set | typed set, disk | typed / raw | raw get | typed get, disk | typed / raw | `get_or_insert_with` hit, disk |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (name, s) in &results {
        println!(
            "| {name} | {} | {} | {:.2} | {} | {} | {:.2} | {} |",
            s[RAW_SET].show(1e6, 2),
            s[DISK_SET].show(1e6, 2),
            s[DISK_SET].median / s[RAW_SET].median,
            s[RAW_GET].show(1e6, 2),
            s[DISK_GET].show(1e6, 2),
            s[DISK_GET].median / s[RAW_GET].median,
            s[DISK_HIT].show(1e6, 2),
        );
    }
    println!("\nIn memory (Mops/s; ns per call in the last column's ratio):\n");
    println!(
        "| value | set | get, first (decodes) | get, again (clone of the kept value) | memoized hit | `HashMap` get + clone | memoized hit / `HashMap` (time) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, s) in &results {
        println!(
            "| {name} | {} | {} | {} | {} | {} | {:.2} |",
            s[MEM_SET].show(1e6, 2),
            s[MEM_FIRST].show(1e6, 2),
            s[MEM_AGAIN].show(1e6, 2),
            s[MEMO_HIT].show(1e6, 2),
            s[HASHMAP].show(1e6, 2),
            s[HASHMAP].median / s[MEMO_HIT].median,
        );
    }
    if let Some((r, cluster)) = redis {
        // Without a cluster its columns have no samples (and are not printed).
        let none = Spread {
            min: f64::NAN,
            median: f64::NAN,
            max: f64::NAN,
        };
        let r: Vec<Spread> = r
            .iter()
            .map(|v| if v.is_empty() { none } else { Spread::of(v) })
            .collect();
        println!(
            "\nTyped Redis over loopback, `UserDetail`, 20,000 keys, one client: one round trip per operation (a script reads the namespace's generation with the entry), against the two-round-trip path (the generation, then the entry), a raw `GET` loop, and the typed disk cache:\n"
        );
        println!(
            "| operation | Redis | two round trips | one / two | raw `GET` | Redis / raw | disk | Redis / disk |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        for (name, redis, two, disk) in [("set", 0, 4, 2), ("get", 1, 5, 3)] {
            let raw = if name == "get" {
                format!(
                    "{} kops/s | {:.2}",
                    r[6].show(1e3, 1),
                    r[redis].median / r[6].median
                )
            } else {
                " | ".to_string()
            };
            println!(
                "| {name} | {} kops/s | {} kops/s | {:.2} | {raw} | {} kops/s | {:.3} |",
                r[redis].show(1e3, 1),
                r[two].show(1e3, 1),
                r[redis].median / r[two].median,
                r[disk].show(1e3, 1),
                r[redis].median / r[disk].median
            );
        }
        println!(
            "\nTyped `get_async` on Redis, one multiplexed connection, a `current_thread` runtime, same keys and run:\n"
        );
        println!("| tasks | kops/s | × one task |");
        println!("|---|---|---|");
        for (tasks, at) in [(1, 9), (8, 10)] {
            println!(
                "| {tasks} | {} | {:.2} |",
                r[at].show(1e3, 1),
                r[at].median / r[9].median
            );
        }
        if cluster {
            println!(
                "\nRedis Cluster (`LOGCACHE_REDIS_CLUSTER_URLS`), one client, same keys and run:\n"
            );
            println!("| operation | cluster | single server | cluster / single |");
            println!("|---|---|---|---|");
            for (name, on_cluster, single) in [("set", 7, 0), ("get", 8, 1)] {
                println!(
                    "| {name} | {} kops/s | {} kops/s | {:.2} |",
                    r[on_cluster].show(1e3, 1),
                    r[single].show(1e3, 1),
                    r[on_cluster].median / r[single].median
                );
            }
        }
    }
}

/// The Redis backend with the cache reading each namespace's generation on its own, as
/// before reads became one round trip: the generation, then the entry.
struct TwoRoundTrips(logcache::RedisBackend);

impl logcache::Backend for TwoRoundTrips {
    fn name(&self) -> &'static str {
        "redis, two round trips"
    }
    fn get(&self, key: &[u8]) -> logcache::Result<Option<Vec<u8>>> {
        self.0.get(key)
    }
    fn set(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> logcache::Result<()> {
        self.0.set(key, value, ttl)
    }
    fn delete(&self, key: &[u8]) -> logcache::Result<bool> {
        self.0.delete(key)
    }
    fn contains(&self, key: &[u8]) -> logcache::Result<bool> {
        self.0.contains(key)
    }
    fn delete_prefix(&self, prefix: &[u8]) -> logcache::Result<u64> {
        self.0.delete_prefix(prefix)
    }
    fn counter(&self, name: &str) -> logcache::Result<u64> {
        self.0.counter(name)
    }
    fn increment(&self, name: &str) -> logcache::Result<u64> {
        self.0.increment(name)
    }
    fn evictions(&self) -> u64 {
        0
    }
    fn flush(&self) -> logcache::Result<()> {
        Ok(())
    }
}

/// Typed `get_async` of every key in `keys` by `tasks` tasks at once (each its share), on a
/// `current_thread` runtime, all over the cache's one multiplexed connection: ops/s.
fn async_gets(cache: &Cache, keys: &[String], tasks: usize) -> f64 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cache = std::sync::Arc::new(cache.clone());
    let keys = std::sync::Arc::new(keys.to_vec());
    runtime.block_on(async {
        // Makes the connection before the clock starts.
        cache
            .get_async::<UserDetail>(keys[0].as_str())
            .await
            .unwrap();
        let start = std::time::Instant::now();
        let handles: Vec<_> = (0..tasks)
            .map(|t| {
                let (cache, keys) = (std::sync::Arc::clone(&cache), std::sync::Arc::clone(&keys));
                tokio::spawn(async move {
                    for k in keys.iter().skip(t).step_by(tasks) {
                        black_box(
                            cache
                                .get_async::<UserDetail>(k.as_str())
                                .await
                                .unwrap()
                                .unwrap(),
                        );
                    }
                })
            })
            .collect();
        for h in handles {
            h.await.unwrap();
        }
        ops_per_sec(keys.len(), start.elapsed())
    })
}

/// A raw `GET` loop over `n` keys holding `value`: the floor of one round trip.
fn raw_gets(url: &str, prefix: &str, n: usize, value: &[u8]) -> f64 {
    let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
    let keys: Vec<String> = (0..n).map(|i| format!("{prefix}raw:{i}")).collect();
    for k in &keys {
        redis::cmd("SET").arg(k).arg(value).exec(&mut con).unwrap();
    }
    let (d, ()) = time(|| {
        for k in &keys {
            black_box(redis::cmd("GET").arg(k).query::<Vec<u8>>(&mut con).unwrap());
        }
    });
    redis::cmd("DEL").arg(&keys).exec(&mut con).unwrap();
    ops_per_sec(n, d)
}

/// Typed set and get over Redis (one round trip each), over Redis the two-round-trip way,
/// and on the typed disk cache, on the first 20,000 keys, then a raw `GET` loop, and on a
/// Redis Cluster if `cluster` names one: (redis set, redis get, disk set, disk get, two-trip
/// set, two-trip get, raw get, cluster set, cluster get, async get by one task, async get by
/// eight tasks) samples in ops/s.
fn redis_vs_disk(
    url: &str,
    cluster: Option<&[String]>,
    base: &str,
    keys: &[String],
    reps: usize,
) -> [Vec<f64>; 11] {
    let n = keys.len().min(20_000);
    let users: Vec<UserDetail> = (0..n).map(UserDetail::make).collect();
    let mut out: [Vec<f64>; 11] = Default::default();
    let open = |what: &str| {
        logcache::RedisBackend::open(url)
            .unwrap()
            .with_prefix(format!("bench:{}:{what}:", std::process::id()))
    };
    for _ in 0..reps {
        let tmp = tempfile::tempdir_in(base).unwrap();
        let redis = CacheBuilder::new().backend(open("one")).build().unwrap();
        let two = CacheBuilder::new()
            .backend(TwoRoundTrips(open("two")))
            .build()
            .unwrap();
        let disk = CacheBuilder::new()
            .disk(tmp.path().join("disk"))
            .engine_options(engine_options())
            .build()
            .unwrap();
        let on_cluster = cluster.map(|urls| {
            let backend = logcache::RedisBackend::cluster(urls)
                .unwrap()
                .with_prefix(format!("bench:{}:cluster:", std::process::id()));
            CacheBuilder::new().backend(backend).build().unwrap()
        });
        // Each cache's set and get series (6 is the raw loop's).
        let caches = [
            (Some(&redis), 0),
            (Some(&disk), 2),
            (Some(&two), 4),
            (on_cluster.as_ref(), 7),
        ];
        for (cache, at) in caches {
            let Some(cache) = cache else { continue };
            let (d, ()) = time(|| {
                for (k, u) in keys[..n].iter().zip(&users) {
                    cache.set(k.as_str(), u).unwrap();
                }
            });
            out[at].push(ops_per_sec(n, d));
            let (d, ()) = time(|| {
                for k in &keys[..n] {
                    black_box(cache.get::<UserDetail>(k.as_str()).unwrap().unwrap());
                }
            });
            out[at + 1].push(ops_per_sec(n, d));
        }
        for (tasks, at) in [(1, 9), (8, 10)] {
            out[at].push(async_gets(&redis, &keys[..n], tasks));
        }
        // The value as JSON: a few bytes longer than the cache's entry, which only makes the
        // raw loop a little harder to match.
        let value = serde_json::to_vec(&users[0]).unwrap();
        out[6].push(raw_gets(
            url,
            &format!("bench:{}:", std::process::id()),
            n,
            &value,
        ));
        for cache in [Some(&redis), Some(&two), on_cluster.as_ref()]
            .into_iter()
            .flatten()
        {
            let ns = cache.namespace(logcache::DEFAULT_NAMESPACE);
            ns.clear().unwrap();
            ns.vacuum().unwrap();
        }
    }
    out
}
