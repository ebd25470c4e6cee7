//! Limits that hold and statistics that tell the truth: evictions are evictions, what cannot
//! be stored is an error, every tier is counted, memory hits do not decode again.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use logcache::memo::{self, MemoSpec};
use logcache::{Cache, CacheBuilder, Error, MemoryLimit};
use serde::{Deserialize, Deserializer, Serialize};

#[test]
fn overwrites_are_not_evictions() {
    let cache = Cache::memory(10);
    for i in 0..100u32 {
        cache.set("same", &i).unwrap();
    }
    assert_eq!(cache.get::<u32>("same").unwrap(), Some(99));
    assert_eq!(cache.stats().evictions, 0);
    for i in 0..30u32 {
        cache.set(&i, &i).unwrap();
    }
    let held = (0..30u32).filter(|i| cache.contains(i).unwrap()).count() as u64
        + u64::from(cache.contains("same").unwrap());
    assert_eq!(cache.stats().evictions, 31 - held, "each eviction once");
}

#[test]
fn a_cache_of_zero_entries_stores_nothing_and_says_so() {
    let cache = Cache::memory(0);
    assert!(matches!(cache.set("k", &1u8), Err(Error::TooLarge { .. })));
    assert_eq!(cache.get::<u8>("k").unwrap(), None);
    let calls = AtomicUsize::new(0);
    let spec = MemoSpec::new("limits::zero");
    for _ in 0..3 {
        let v: u8 = memo::memoize(&cache, &spec, &(1u8,), || {
            calls.fetch_add(1, Ordering::SeqCst);
            7
        });
        assert_eq!(v, 7);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3, "every call computes");
    let stats = cache.stats();
    assert_eq!(stats.total.writes, 0);
    assert_eq!(stats.total.errors, 4, "each refused store is counted");
    assert_eq!(stats.evictions, 0);
}

#[test]
fn a_value_larger_than_the_memory_limit_is_an_error_not_silence() {
    let cache = CacheBuilder::new()
        .memory(MemoryLimit::Bytes(100_000))
        .build()
        .unwrap();
    cache.set("big", &"small at first".to_string()).unwrap();
    let err = cache.set("big", &"x".repeat(200_000)).unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("does not fit"), "{err}");
    assert_eq!(cache.get::<String>("big").unwrap(), None);
    cache.set("fits", &"x".repeat(10_000)).unwrap();
    assert_eq!(
        cache.get::<String>("fits").unwrap().map(|s| s.len()),
        Some(10_000)
    );
}

#[test]
fn behind_a_memory_tier_a_large_value_lives_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let cache = CacheBuilder::new()
        .disk(dir.path())
        .memory_tier(MemoryLimit::Bytes(100_000))
        .build()
        .unwrap();
    cache.set("big", &"old".to_string()).unwrap();
    assert_eq!(cache.get::<String>("big").unwrap().as_deref(), Some("old"));
    cache.set("big", &"x".repeat(200_000)).unwrap();
    assert_eq!(
        cache.get::<String>("big").unwrap().map(|s| s.len()),
        Some(200_000)
    );
    assert_eq!(
        cache.get::<String>("big").unwrap().map(|s| s.len()),
        Some(200_000)
    );
}

#[test]
fn a_tiered_cache_counts_the_evictions_of_every_tier() {
    let dir = tempfile::tempdir().unwrap();
    let cache = CacheBuilder::new()
        .disk(dir.path())
        .memory_tier(MemoryLimit::Entries(10))
        .build()
        .unwrap();
    for i in 0..100u32 {
        cache.set(&i, &i).unwrap();
    }
    let stats = cache.stats();
    assert_eq!(stats.tiers.len(), 2);
    assert_eq!(stats.tiers[0].backend, "memory");
    assert_eq!(stats.tiers[1].backend, "disk");
    assert!(stats.tiers[0].evictions >= 90, "{:?}", stats.tiers);
    assert_eq!(stats.tiers[1].entries, Some(100));
    assert_eq!(
        stats.evictions,
        stats.tiers[0].evictions + stats.tiers[1].evictions
    );
    assert!(
        (0..100u32).all(|i| cache.get::<u32>(&i).unwrap() == Some(i)),
        "all on disk"
    );
}

#[test]
fn a_disk_cache_gives_its_engine() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    for i in 0..100u32 {
        cache.set(&i, &vec![i; 10]).unwrap();
        cache.set(&i, &vec![i; 20]).unwrap();
    }
    let store = cache.engine().expect("a disk cache has an engine");
    assert_eq!(store.stats().keys, 100);
    assert!(store.stats().dead_bytes > 0);
    store.compact().unwrap();
    assert_eq!(store.stats().dead_bytes, 0);
    store.sync().unwrap();
    assert!(store.verify().unwrap().is_clean());
    assert!(matches!(
        logcache::engine::verify(dir.path()),
        Err(logcache::engine::Error::Locked(_))
    ));
    assert_eq!(cache.get::<Vec<u32>>(&5u32).unwrap(), Some(vec![5; 20]));
    assert!(Cache::memory(1).engine().is_none());
}

/// Counts how often it is decoded.
#[derive(Serialize, Clone, Debug, PartialEq)]
struct Counted(Vec<String>);

static DECODES: AtomicUsize = AtomicUsize::new(0);

impl<'de> Deserialize<'de> for Counted {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        DECODES.fetch_add(1, Ordering::SeqCst);
        Vec::deserialize(d).map(Counted)
    }
}

#[test]
fn memory_hits_return_a_clone_without_decoding_again() {
    let value = Counted((0..100).map(|i| format!("item {i}")).collect());
    let dir = tempfile::tempdir().unwrap();
    let disk = Cache::open(dir.path()).unwrap();
    disk.set("k", &value).unwrap();
    drop(disk);
    let tiered = CacheBuilder::new()
        .disk(dir.path())
        .memory_tier(MemoryLimit::Entries(100))
        .build()
        .unwrap();
    let memory = Cache::memory(100);
    memory.set("k", &value).unwrap();
    // Fingerprinting traces the type once (that counts as decodes too): start after it.
    let _ = logcache::type_fingerprint::<Counted>();
    let before = DECODES.load(Ordering::SeqCst);
    for cache in [&memory, &tiered] {
        for _ in 0..5 {
            assert_eq!(cache.get::<Counted>("k").unwrap().as_ref(), Some(&value));
            assert_eq!(
                cache.get_or_insert_with("k", || unreachable!()).ok(),
                Some(value.clone())
            );
        }
    }
    assert_eq!(
        DECODES.load(Ordering::SeqCst) - before,
        2,
        "one decode per cache"
    );
    // A changed value is decoded afresh, once.
    let other = Counted(vec!["new".into()]);
    memory.set("k", &other).unwrap();
    assert_eq!(memory.get::<Counted>("k").unwrap(), Some(other.clone()));
    assert_eq!(memory.get::<Counted>("k").unwrap(), Some(other));
    assert_eq!(DECODES.load(Ordering::SeqCst) - before, 3);
    // Expiry and tags still apply to kept values.
    memory
        .set_with_ttl("short", &value, Duration::from_millis(200))
        .unwrap();
    assert!(memory.get::<Counted>("short").unwrap().is_some());
    std::thread::sleep(Duration::from_millis(250));
    assert_eq!(memory.get::<Counted>("short").unwrap(), None);
    memory
        .set_with("tagged", &value, &logcache::SetOptions::new().tag("t"))
        .unwrap();
    assert!(memory.get::<Counted>("tagged").unwrap().is_some());
    memory.evict_tag("t").unwrap();
    assert_eq!(memory.get::<Counted>("tagged").unwrap(), None);
}
