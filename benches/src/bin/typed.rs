//! The typed cache against the raw engine and the memory backend, in one run.
//!
//! ```text
//! cargo run --release -p logcache-benches --bin typed -- [KEYS] [REPETITIONS]
//! ```
//! KEYS (default 200,000) `UserDetail { name, age }` values under `"user:N"` keys:
//! - raw: `Store::put`/`get` of the key bytes and the bincode bytes of the value, encoded
//!   beforehand (what the engine does when nothing is typed);
//! - typed disk: `Cache::set`/`get::<UserDetail>` on the same engine (encoding, type
//!   fingerprint, envelope, namespace generation, statistics on top);
//! - typed memory: the same calls on `Cache::memory`;
//! - memoized hit: `get_or_insert_with` that finds the value;
//! - typed Redis over loopback (if `LOGCACHE_REDIS_URL` is set), on the first 20,000 keys,
//!   against the typed disk cache on the same keys.
//!
//! `Durability::None` for both disk runs. Median (min–max) of REPETITIONS runs (default 3).

use std::hint::black_box;

use logcache::{Cache, CacheBuilder, MemoryLimit};
use logcache_benches::{Spread, ops_per_sec, time};
use logcache_engine::{Durability, Options, Store};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct UserDetail {
    name: String,
    age: u8,
}

fn user(i: usize) -> UserDetail {
    UserDetail {
        name: format!("User number {i}"),
        age: (i % 100) as u8,
    }
}

fn engine_options() -> Options {
    Options::default()
        .durability(Durability::None)
        .auto_compaction(false)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map_or(200_000, |a| a.parse().expect("KEYS"));
    let reps: usize = args.next().map_or(3, |a| a.parse().expect("REPETITIONS"));
    let base = std::env::var("LOGCACHE_BENCH_DIR").unwrap_or_else(|_| "target".into());
    std::fs::create_dir_all(&base).unwrap();
    let keys: Vec<String> = (0..n).map(|i| format!("user:{i}")).collect();
    let users: Vec<UserDetail> = (0..n).map(user).collect();
    let raw_values: Vec<Vec<u8>> = users
        .iter()
        .map(|u| bincode::serde::encode_to_vec(u, bincode::config::standard()).unwrap())
        .collect();

    let mut samples: [Vec<f64>; 7] = Default::default();
    for rep in 0..reps {
        eprintln!("repetition {}/{reps}", rep + 1);
        let tmp = tempfile::tempdir_in(&base).unwrap();

        let store = Store::open(tmp.path().join("raw"), engine_options()).unwrap();
        let (d, ()) = time(|| {
            for (k, v) in keys.iter().zip(&raw_values) {
                store.put(k.as_bytes(), v).unwrap();
            }
        });
        samples[0].push(ops_per_sec(n, d));
        let (d, ()) = time(|| {
            for k in &keys {
                black_box(store.get(k.as_bytes()).unwrap().unwrap());
            }
        });
        samples[1].push(ops_per_sec(n, d));
        drop(store);

        let disk = CacheBuilder::new()
            .disk(tmp.path().join("typed"))
            .engine_options(engine_options())
            .build()
            .unwrap();
        let memory = CacheBuilder::new()
            .memory(MemoryLimit::Entries(2 * n))
            .build()
            .unwrap();
        for (i, cache) in [&disk, &memory].into_iter().enumerate() {
            let (d, ()) = time(|| {
                for (k, u) in keys.iter().zip(&users) {
                    cache.set(k.as_str(), u).unwrap();
                }
            });
            samples[2 + 2 * i].push(ops_per_sec(n, d));
            let (d, ()) = time(|| {
                for k in &keys {
                    black_box(cache.get::<UserDetail>(k.as_str()).unwrap().unwrap());
                }
            });
            samples[3 + 2 * i].push(ops_per_sec(n, d));
        }
        let hits = |cache: &Cache| {
            time(|| {
                for (k, u) in keys.iter().zip(&users) {
                    black_box(cache.get_or_insert_with(k.as_str(), || u.clone()).unwrap());
                }
            })
        };
        let (d, ()) = hits(&disk);
        samples[6].push(ops_per_sec(n, d));
    }

    let redis = std::env::var("LOGCACHE_REDIS_URL")
        .ok()
        .map(|url| redis_vs_disk(&url, &base, &keys, &users, reps));
    let s: Vec<Spread> = samples.iter().map(|v| Spread::of(v)).collect();
    println!(
        "Command: cargo run --release -p logcache-benches --bin typed -- {n} {reps}; median (min–max) of {reps} runs\n"
    );
    println!(
        "| operation | raw engine | typed, disk | typed / raw | typed, memory | memory / disk |"
    );
    println!("|---|---|---|---|---|---|");
    for (name, raw, disk, mem) in [("set", 0, 2, 4), ("get", 1, 3, 5)] {
        println!(
            "| {name} | {} Mops/s | {} Mops/s | {:.2} | {} Mops/s | {:.2} |",
            s[raw].show(1e6, 2),
            s[disk].show(1e6, 2),
            s[disk].median / s[raw].median,
            s[mem].show(1e6, 2),
            s[mem].median / s[disk].median
        );
    }
    println!(
        "| get_or_insert_with, hit | | {} Mops/s | {:.2} (vs raw get) | | |",
        s[6].show(1e6, 2),
        s[6].median / s[1].median
    );
    if let Some(r) = redis {
        let r: Vec<Spread> = r.iter().map(|v| Spread::of(v)).collect();
        println!("\nTyped Redis over loopback against the typed disk cache, 20,000 keys:\n");
        println!("| operation | Redis | disk | Redis / disk |");
        println!("|---|---|---|---|");
        for (name, redis, disk) in [("set", 0, 2), ("get", 1, 3)] {
            println!(
                "| {name} | {} kops/s | {} kops/s | {:.3} |",
                r[redis].show(1e3, 1),
                r[disk].show(1e3, 1),
                r[redis].median / r[disk].median
            );
        }
    }
}

/// Typed set and get over Redis against the typed disk cache, on the first 20,000 keys:
/// (redis set, redis get, disk set, disk get) samples in ops/s.
fn redis_vs_disk(
    url: &str,
    base: &str,
    keys: &[String],
    users: &[UserDetail],
    reps: usize,
) -> [Vec<f64>; 4] {
    let n = keys.len().min(20_000);
    let mut out: [Vec<f64>; 4] = Default::default();
    for _ in 0..reps {
        let tmp = tempfile::tempdir_in(base).unwrap();
        let backend = logcache::RedisBackend::open(url)
            .unwrap()
            .with_prefix(format!("bench:{}:", std::process::id()));
        let redis = CacheBuilder::new().backend(backend).build().unwrap();
        let disk = CacheBuilder::new()
            .disk(tmp.path().join("disk"))
            .engine_options(engine_options())
            .build()
            .unwrap();
        for (i, cache) in [&redis, &disk].into_iter().enumerate() {
            let (d, ()) = time(|| {
                for (k, u) in keys[..n].iter().zip(users) {
                    cache.set(k.as_str(), u).unwrap();
                }
            });
            out[2 * i].push(ops_per_sec(n, d));
            let (d, ()) = time(|| {
                for k in &keys[..n] {
                    black_box(cache.get::<UserDetail>(k.as_str()).unwrap().unwrap());
                }
            });
            out[2 * i + 1].push(ops_per_sec(n, d));
        }
        redis
            .namespace(logcache::DEFAULT_NAMESPACE)
            .clear()
            .unwrap();
        redis
            .namespace(logcache::DEFAULT_NAMESPACE)
            .vacuum()
            .unwrap();
    }
    out
}
