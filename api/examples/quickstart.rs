//! Memoize a slow, structured-result function on a disk cache.
//!
//! ```text
//! cargo run --release -p logcache --example quickstart
//! ```
//! The first run computes (slowly) and stores the result in `./my_cache_directory`; the
//! second call in the same run, and every call in later runs, read it back in microseconds.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use logcache::{Cache, memoize};
use serde::{Deserialize, Serialize};

/// What an LLM extracts from a sentence.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct UserDetail {
    name: String,
    age: u8,
}

static CACHE: LazyLock<Cache> = LazyLock::new(|| {
    Cache::open("./my_cache_directory").unwrap_or_else(|e| {
        eprintln!("cannot open ./my_cache_directory: {e}");
        std::process::exit(1)
    })
});

/// Stands in for a slow LLM call that turns text into a `UserDetail`.
#[memoize(cache = CACHE)]
fn extract(text: &str) -> UserDetail {
    std::thread::sleep(Duration::from_secs(1));
    let name = text
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    let age = text
        .split_whitespace()
        .find_map(|w| w.parse().ok())
        .unwrap_or_default();
    UserDetail { name, age }
}

fn timed_call(label: &str, text: &str) {
    let before = CACHE.stats().total;
    let started = Instant::now();
    let user = extract(text);
    let elapsed = started.elapsed();
    let hit = CACHE.stats().total.hits > before.hits;
    let how = if hit { "from the cache" } else { "computed" };
    println!("{label}: {user:?} in {elapsed:.2?} ({how})");
}

fn main() {
    let text = "Jason is 25 years old";
    timed_call("first call ", text);
    timed_call("second call", text);
    let stats = CACHE.stats();
    println!(
        "hits {}, misses {}, writes {}; cache directory ./my_cache_directory",
        stats.total.hits, stats.total.misses, stats.total.writes
    );
    println!("Run it again: the first call now comes from the disk cache.");
}
