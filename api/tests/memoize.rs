//! The `#[memoize]` attribute: sync and async functions, `Result` functions, options, and a
//! backend that fails.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use logcache::{Backend, Cache, Error, memoize};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct UserDetail {
    name: String,
    age: u8,
}

static CACHE: LazyLock<Cache> = LazyLock::new(|| Cache::memory(10_000));

static EXTRACT_CALLS: AtomicUsize = AtomicUsize::new(0);

/// The doc comment stays.
#[memoize(cache = CACHE)]
fn extract(text: &str) -> UserDetail {
    EXTRACT_CALLS.fetch_add(1, Ordering::SeqCst);
    let mut words = text.split(' ');
    let name = words.next().unwrap_or_default().to_string();
    if name.is_empty() {
        // An early return inside the body returns from the memoized function.
        return UserDetail {
            name: "nobody".into(),
            age: 0,
        };
    }
    UserDetail {
        name,
        age: words.next_back().and_then(|w| w.parse().ok()).unwrap_or(0),
    }
}

#[test]
fn a_memoized_function_runs_once_per_argument() {
    let before = EXTRACT_CALLS.load(Ordering::SeqCst);
    assert_eq!(extract("Jason is 25").age, 25);
    assert_eq!(extract("Jason is 25").age, 25);
    assert_eq!(extract("Ann is 31").name, "Ann");
    assert_eq!(extract("").name, "nobody");
    assert_eq!(extract("").name, "nobody");
    assert_eq!(EXTRACT_CALLS.load(Ordering::SeqCst) - before, 3);
    // Each memoized function is a namespace of its own, named by its path.
    let ns = CACHE.stats().namespaces["memoize::extract"];
    assert!(ns.hits >= 2 && ns.misses >= 3, "{ns:?}");
}

struct Client;

static FETCH_CALLS: AtomicUsize = AtomicUsize::new(0);

#[memoize(cache = CACHE, key = (url,))]
fn fetch(_client: &Client, url: &str) -> String {
    FETCH_CALLS.fetch_add(1, Ordering::SeqCst);
    format!("body of {url}")
}

#[test]
fn a_key_option_leaves_arguments_out() {
    assert_eq!(fetch(&Client, "a"), "body of a");
    assert_eq!(fetch(&Client, "a"), "body of a");
    assert_eq!(fetch(&Client, "b"), "body of b");
    assert_eq!(FETCH_CALLS.load(Ordering::SeqCst), 2);
}

#[derive(Debug, PartialEq)]
enum LlmError {
    RateLimited,
    Cache(String),
}

impl From<Error> for LlmError {
    fn from(e: Error) -> Self {
        LlmError::Cache(e.to_string())
    }
}

static ASK_CALLS: AtomicUsize = AtomicUsize::new(0);

#[memoize(cache = CACHE)]
fn ask(prompt: &str, fail: bool) -> Result<String, LlmError> {
    ASK_CALLS.fetch_add(1, Ordering::SeqCst);
    if fail {
        return Err(LlmError::RateLimited);
    }
    let answer = format!("answer to {prompt}");
    Ok(answer)
}

#[test]
fn only_ok_results_are_stored() {
    assert_eq!(ask("q", true), Err(LlmError::RateLimited));
    assert_eq!(ask("q", true), Err(LlmError::RateLimited));
    assert_eq!(ASK_CALLS.load(Ordering::SeqCst), 2, "errors are not cached");
    assert_eq!(ask("q", false).unwrap(), "answer to q");
    assert_eq!(ask("q", false).unwrap(), "answer to q");
    assert_eq!(ASK_CALLS.load(Ordering::SeqCst), 3);
}

static SLOW_CALLS: AtomicUsize = AtomicUsize::new(0);

#[memoize(cache = CACHE, ttl = "1s")]
async fn slow_square(n: u64) -> u64 {
    SLOW_CALLS.fetch_add(1, Ordering::SeqCst);
    n * n
}

#[memoize(cache = CACHE)]
async fn async_fallible(n: u64) -> Result<u64, LlmError> {
    if n == 0 {
        return Err(LlmError::RateLimited);
    }
    Ok(n + 1)
}

#[test]
fn async_functions_and_the_ttl_option() {
    futures_executor::block_on(async {
        assert_eq!(slow_square(12).await, 144);
        assert_eq!(slow_square(12).await, 144);
        assert_eq!(SLOW_CALLS.load(Ordering::SeqCst), 1);
        std::thread::sleep(Duration::from_millis(1200));
        assert_eq!(slow_square(12).await, 144);
        assert_eq!(SLOW_CALLS.load(Ordering::SeqCst), 2, "the entry expired");
        assert_eq!(async_fallible(0).await, Err(LlmError::RateLimited));
        assert_eq!(async_fallible(1).await, Ok(2));
    });
}

/// A backend whose every operation fails, like an unreachable server.
struct Unreachable;

impl Backend for Unreachable {
    fn name(&self) -> &'static str {
        "unreachable"
    }
    fn get(&self, _: &[u8]) -> logcache::Result<Option<Vec<u8>>> {
        Err(down())
    }
    fn set(&self, _: &[u8], _: &[u8], _: Option<Duration>) -> logcache::Result<()> {
        Err(down())
    }
    fn delete(&self, _: &[u8]) -> logcache::Result<bool> {
        Err(down())
    }
    fn contains(&self, _: &[u8]) -> logcache::Result<bool> {
        Err(down())
    }
    fn delete_prefix(&self, _: &[u8]) -> logcache::Result<u64> {
        Err(down())
    }
    fn counter(&self, _: &str) -> logcache::Result<u64> {
        Err(down())
    }
    fn increment(&self, _: &str) -> logcache::Result<u64> {
        Err(down())
    }
    fn evictions(&self) -> u64 {
        0
    }
    fn flush(&self) -> logcache::Result<()> {
        Err(down())
    }
}

fn down() -> Error {
    Error::Backend {
        backend: "unreachable",
        message: "connection refused".into(),
    }
}

static BROKEN: LazyLock<Cache> = LazyLock::new(|| Cache::with_backend(Unreachable));

#[memoize(cache = BROKEN)]
fn still_works(n: u32) -> u32 {
    n * 2
}

#[memoize(cache = BROKEN, strict)]
fn strict_fails(n: u32) -> Result<u32, LlmError> {
    Ok(n * 2)
}

#[test]
fn an_unreachable_cache_still_returns_the_value_unless_strict() {
    assert_eq!(still_works(21), 42);
    assert_eq!(still_works(21), 42);
    assert!(BROKEN.stats().total.errors >= 2);
    match strict_fails(1) {
        Err(LlmError::Cache(message)) => {
            assert!(message.contains("connection refused"), "{message}")
        }
        other => panic!("expected the cache error, got {other:?}"),
    }
    assert!(matches!(BROKEN.get::<u32>("k"), Err(Error::Backend { .. })));
}

static COUNTED: AtomicUsize = AtomicUsize::new(0);

#[memoize(cache = CACHE, version = 3, hash_body = false)]
fn versioned(n: u8) -> u8 {
    COUNTED.fetch_add(1, Ordering::SeqCst);
    n
}

#[test]
fn clearing_a_functions_namespace_recomputes_it() {
    versioned(1);
    versioned(1);
    assert_eq!(COUNTED.load(Ordering::SeqCst), 1);
    CACHE.namespace("memoize::versioned").clear().unwrap();
    versioned(1);
    assert_eq!(COUNTED.load(Ordering::SeqCst), 2);
}

static GENERIC_CALLS: AtomicUsize = AtomicUsize::new(0);

#[memoize(cache = CACHE)]
fn show<T: Serialize + std::fmt::Debug>(x: T) -> String {
    GENERIC_CALLS.fetch_add(1, Ordering::SeqCst);
    format!("{x:?}")
}

#[memoize(cache = CACHE)]
fn size_of_type<T>() -> usize {
    std::mem::size_of::<T>()
}

#[memoize(cache = CACHE)]
fn show_impl(x: impl Serialize + std::fmt::Debug) -> String {
    format!("{x:?} of {}", std::any::type_name_of_val(&x))
}

#[test]
fn generic_functions_are_memoized_per_instantiation() {
    // 1u32 and true encode differently, 1u32 and 1u64 alike: the instantiation tells them apart.
    assert_eq!(show(1u32), "1");
    assert_eq!(show(true), "true");
    assert_eq!(show(1u64), "1");
    assert_eq!(show(1u32), "1");
    assert_eq!(GENERIC_CALLS.load(Ordering::SeqCst), 3);
    assert_eq!(size_of_type::<u8>(), 1);
    assert_eq!(size_of_type::<u64>(), 8);
    assert_eq!(size_of_type::<[u8; 3]>(), 3);
    assert_eq!(show_impl(7u8), "7 of u8");
    assert_eq!(show_impl(7u16), "7 of u16");
}

static TOTAL_CALLS: AtomicUsize = AtomicUsize::new(0);

#[memoize(cache = CACHE)]
fn total(prices: HashMap<String, u32>, seen: HashSet<u32>) -> u32 {
    TOTAL_CALLS.fetch_add(1, Ordering::SeqCst);
    prices.values().sum::<u32>() + seen.len() as u32
}

#[test]
fn equal_maps_and_sets_are_one_key() {
    let ns = CACHE.namespace("memoize::total");
    let writes = ns
        .stats()
        .namespaces
        .get("memoize::total")
        .map_or(0, |c| c.writes);
    for i in 0..5u32 {
        // Built in a different order each time (and each HashMap has its own random seed).
        let mut entries: Vec<(String, u32)> = (0..40).map(|n| (format!("item{n}"), n)).collect();
        entries.rotate_left(i as usize * 7);
        let mut seen: Vec<u32> = (0..40).collect();
        seen.rotate_left(i as usize * 3);
        assert_eq!(
            total(entries.into_iter().collect(), seen.into_iter().collect()),
            780 + 40
        );
    }
    assert_eq!(TOTAL_CALLS.load(Ordering::SeqCst), 1, "computed once");
    let after = CACHE.stats().namespaces["memoize::total"].writes;
    assert_eq!(after - writes, 1, "one entry written");
}
