//! The shared backend suite: every test runs on the memory, disk and tiered backends.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use common::{Fixture, UserDetail, v2};
use logcache::memo::{self, MemoSpec};
use logcache::{Cache, Error, SetOptions};
use serde::Serialize;

fn jason() -> UserDetail {
    UserDetail {
        name: "Jason".into(),
        age: 25,
    }
}

fn typed_values_round_trip_under_any_serde_key(f: &Fixture) {
    let cache = f.open();
    #[derive(Serialize)]
    struct Query<'a> {
        model: &'a str,
        prompt: &'a str,
    }
    cache.set("user:jason", &jason()).unwrap();
    cache.set(&42u64, &vec![1u32, 2, 3]).unwrap();
    cache.set(&("tuple", 7), &Some(1.5f64)).unwrap();
    let q = Query {
        model: "m",
        prompt: "who is Jason?",
    };
    cache.set(&q, &"an answer".to_string()).unwrap();
    assert_eq!(
        cache.get::<UserDetail>("user:jason").unwrap(),
        Some(jason())
    );
    assert_eq!(cache.get::<Vec<u32>>(&42u64).unwrap(), Some(vec![1, 2, 3]));
    assert_eq!(
        cache.get::<Option<f64>>(&("tuple", 7)).unwrap(),
        Some(Some(1.5))
    );
    assert_eq!(
        cache.get::<String>(&q).unwrap().as_deref(),
        Some("an answer")
    );
    assert_eq!(cache.get::<UserDetail>("nobody").unwrap(), None);
    assert_eq!(cache.get::<u64>(&43u64).unwrap(), None, "keys are exact");
}

/// The serde shapes that need a self-describing encoding, and the edges of the data model.
mod shapes {
    use std::collections::{BTreeMap, HashMap};

    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
    #[serde(untagged)]
    pub enum Untagged {
        Number(i64),
        Text(String),
        List(Vec<Untagged>),
    }

    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
    #[serde(tag = "type")]
    pub enum Internal {
        Message {
            role: String,
            content: String,
        },
        ToolCall {
            name: String,
            arguments: serde_json::Value,
        },
    }

    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
    #[serde(tag = "t", content = "c")]
    pub enum Adjacent {
        A(u8),
        B { x: Option<String> },
    }

    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
    pub struct Usage {
        pub prompt_tokens: u32,
        pub completion_tokens: u32,
    }

    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
    pub struct Flattened {
        pub id: String,
        #[serde(flatten)]
        pub usage: Usage,
        #[serde(flatten)]
        pub extra: BTreeMap<String, serde_json::Value>,
    }

    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
    pub struct Sparse {
        #[serde(skip_serializing_if = "Option::is_none")]
        pub email: Option<String>,
        #[serde(skip_serializing_if = "Vec::is_empty", default)]
        pub tags: Vec<String>,
        pub name: String,
    }

    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
    pub enum Sentiment {
        Positive,
        Negative,
        Mixed { score: f32 },
    }

    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
    pub struct Review {
        pub sentiment: Option<Sentiment>,
        pub history: Vec<Sentiment>,
        pub by_model: HashMap<String, (u8, i128)>,
        pub nested: Option<Option<()>>,
        pub ip: std::net::IpAddr,
        pub count: std::num::NonZeroU32,
    }
}

fn check_round_trip<T: logcache::Value + PartialEq + std::fmt::Debug>(
    cache: &Cache,
    key: &str,
    value: T,
) {
    cache.set(key, &value).unwrap();
    assert_eq!(cache.get::<T>(key).unwrap().as_ref(), Some(&value), "{key}");
    assert_eq!(
        cache.get::<T>(key).unwrap().as_ref(),
        Some(&value),
        "{key}, read again"
    );
    let computed: T = cache
        .get_or_insert_with(&(key, "computed"), || value.clone())
        .unwrap();
    assert_eq!(computed, value);
    let cached: T = cache
        .get_or_insert_with(&(key, "computed"), || -> T {
            unreachable!("{key} was cached")
        })
        .unwrap();
    assert_eq!(cached, value, "{key} through get_or_insert_with");
}

fn every_serde_shape_round_trips(f: &Fixture) {
    use serde_json::json;
    use shapes::*;
    let check_all = |cache: &Cache| {
        check_round_trip(
            cache,
            "json",
            json!({"model": "m", "choices": [{"index": 0, "text": "hi", "logprobs": null}], "usage": {"total": 7}, "score": -0.5}),
        );
        check_round_trip(
            cache,
            "untagged",
            vec![
                Untagged::Number(-3),
                Untagged::Text("t".into()),
                Untagged::List(vec![Untagged::Number(1)]),
            ],
        );
        check_round_trip(
            cache,
            "internal",
            vec![
                Internal::Message {
                    role: "user".into(),
                    content: "hello".into(),
                },
                Internal::ToolCall {
                    name: "search".into(),
                    arguments: json!({"q": "rust"}),
                },
            ],
        );
        check_round_trip(cache, "adjacent", (Adjacent::A(1), Adjacent::B { x: None }));
        check_round_trip(
            cache,
            "flatten",
            Flattened {
                id: "r1".into(),
                usage: Usage {
                    prompt_tokens: 3,
                    completion_tokens: 4,
                },
                extra: [("system_fingerprint".to_string(), json!("fp"))]
                    .into_iter()
                    .collect(),
            },
        );
        check_round_trip(
            cache,
            "sparse",
            Sparse {
                email: None,
                tags: vec![],
                name: "n".into(),
            },
        );
        check_round_trip(
            cache,
            "sparse full",
            Sparse {
                email: Some("e".into()),
                tags: vec!["a".into()],
                name: "n".into(),
            },
        );
        check_round_trip(
            cache,
            "review",
            Review {
                sentiment: Some(Sentiment::Mixed { score: 0.25 }),
                history: vec![Sentiment::Positive, Sentiment::Negative],
                by_model: [("m".to_string(), (1u8, i128::MIN))].into_iter().collect(),
                nested: Some(None),
                ip: "::1".parse().unwrap(),
                count: std::num::NonZeroU32::new(3).unwrap(),
            },
        );
        check_round_trip(cache, "some none", Some(None::<u8>));
        check_round_trip(cache, "u128", u128::MAX);
    };
    let cache = f.open();
    check_all(&cache);
    if f.persistent() {
        drop(cache);
        let cache = f.open();
        assert_eq!(
            cache.get::<Option<Option<u8>>>("some none").unwrap(),
            Some(Some(None)),
            "after reopen"
        );
        check_all(&cache);
    }
    // A memoized function whose result is a serde_json::Value computes once.
    let cache = f.open();
    let spec = MemoSpec::new("suite::llm_json");
    let calls = AtomicUsize::new(0);
    for _ in 0..3 {
        let v: serde_json::Value = memo::memoize(&cache, &spec, &("prompt",), || {
            calls.fetch_add(1, Ordering::SeqCst);
            json!({"answer": 42, "sources": ["a", "b"]})
        });
        assert_eq!(v["answer"], 42);
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the Value result is cached"
    );
}

fn delete_and_contains(f: &Fixture) {
    let cache = f.open();
    cache.set("k", &1u8).unwrap();
    assert!(cache.contains("k").unwrap());
    assert!(cache.delete("k").unwrap());
    assert!(!cache.contains("k").unwrap());
    assert!(!cache.delete("k").unwrap());
    assert_eq!(cache.get::<u8>("k").unwrap(), None);
}

fn values_persist_across_reopen(f: &Fixture) {
    if !f.persistent() {
        return;
    }
    {
        let cache = f.open();
        cache.set("user:jason", &jason()).unwrap();
        cache.namespace("other").set("k", &7u32).unwrap();
    }
    let cache = f.open();
    assert_eq!(
        cache.get::<UserDetail>("user:jason").unwrap(),
        Some(jason())
    );
    assert_eq!(cache.namespace("other").get::<u32>("k").unwrap(), Some(7));
}

fn a_value_of_another_type_is_a_decode_error_for_get(f: &Fixture) {
    let cache = f.open();
    cache.set("user", &jason()).unwrap();
    match cache.get::<v2::UserDetail>("user") {
        Err(Error::Decode { key, type_name, .. }) => {
            assert!(key.contains("user"), "{key}");
            assert!(type_name.ends_with("v2::UserDetail"), "{type_name}");
        }
        other => panic!("expected Error::Decode, got {other:?}"),
    }
    // Layout-compatible types are told apart too: both are one varint.
    cache.set("n", &7u32).unwrap();
    assert!(matches!(cache.get::<i32>("n"), Err(Error::Decode { .. })));
    assert!(cache.contains("user").unwrap(), "the value is still there");
    assert_eq!(cache.stats().total.errors, 2);
}

fn get_or_insert_with_recomputes_and_overwrites_a_stale_value(f: &Fixture) {
    let cache = f.open();
    cache.set("user", &jason()).unwrap();
    let calls = AtomicUsize::new(0);
    let new = || {
        calls.fetch_add(1, Ordering::SeqCst);
        v2::UserDetail {
            name: "Jason".into(),
            age: 25,
            email: None,
        }
    };
    let got: v2::UserDetail = cache.get_or_insert_with("user", new).unwrap();
    assert_eq!(got.email, None);
    let again: v2::UserDetail = cache.get_or_insert_with("user", new).unwrap();
    assert_eq!(again, got);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(cache.get::<v2::UserDetail>("user").unwrap().is_some());
}

fn changing_the_result_type_invalidates_memoized_results(f: &Fixture) {
    let cache = f.open();
    let spec = MemoSpec::new("suite::extract");
    let args = ("Jason is 25",);
    let calls = AtomicUsize::new(0);
    let old: UserDetail = memo::memoize(&cache, &spec, &args, || {
        calls.fetch_add(1, Ordering::SeqCst);
        jason()
    });
    let cached: UserDetail = memo::memoize(&cache, &spec, &args, || unreachable!("cached"));
    assert_eq!(old, cached);
    // Same function, same arguments, a new result shape: computed afresh, never misread.
    let new: v2::UserDetail = memo::memoize(&cache, &spec, &args, || {
        calls.fetch_add(1, Ordering::SeqCst);
        v2::UserDetail {
            name: "Jason".into(),
            age: 25,
            email: Some("j@example.com".into()),
        }
    });
    assert_eq!(new.email.as_deref(), Some("j@example.com"));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // A new body hash or version also misses.
    let edited = MemoSpec {
        body_hash: 1,
        ..spec.clone()
    };
    let bumped = MemoSpec { version: 1, ..spec };
    for s in [&edited, &bumped] {
        let _: UserDetail = memo::memoize(&cache, s, &args, || {
            calls.fetch_add(1, Ordering::SeqCst);
            jason()
        });
    }
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

fn ttl_entries_expire_and_the_default_ttl_applies(f: &Fixture) {
    let cache = f.open();
    cache
        .set_with_ttl("short", &1u8, Duration::from_millis(1000))
        .unwrap();
    cache.set("forever", &2u8).unwrap();
    assert_eq!(cache.get::<u8>("short").unwrap(), Some(1));
    thread::sleep(Duration::from_millis(1100));
    assert_eq!(cache.get::<u8>("short").unwrap(), None);
    assert!(!cache.contains("short").unwrap());
    assert_eq!(cache.get::<u8>("forever").unwrap(), Some(2));
    drop(cache);
    let with_default = f
        .builder()
        .default_ttl(Duration::from_millis(1000))
        .build()
        .unwrap();
    with_default.set("d", &3u8).unwrap();
    let computed = with_default.get_or_insert_with("g", || 4u8).unwrap();
    assert_eq!(computed, 4);
    assert_eq!(with_default.get::<u8>("d").unwrap(), Some(3));
    thread::sleep(Duration::from_millis(1100));
    assert_eq!(with_default.get::<u8>("d").unwrap(), None);
    assert_eq!(with_default.get::<u8>("g").unwrap(), None);
}

fn eviction_keeps_the_cache_under_its_size_limit(f: &Fixture) {
    if !f.has_size_limit() {
        return;
    }
    let limit = 64u64 << 10;
    let builder = f.builder().max_bytes(limit);
    let builder = if f.persistent() {
        let engine = logcache::engine::Options::default()
            .max_segment_size(8 << 10)
            .compaction_interval(Duration::from_millis(5));
        builder.engine_options(engine)
    } else {
        builder
    };
    let cache = builder.build().unwrap();
    for i in 0..2000u32 {
        cache.set(&i, &vec![7u8; 200]).unwrap();
    }
    // About 250 bytes an entry: the limit holds roughly 250 of them (a disk store can run one
    // 8 KiB segment over). A memory tier keeps up to its own 1000 entries on top. The disk
    // limit is enforced by a background thread, so wait for it.
    let bound = if f.kind == common::Kind::Tiered {
        330 + 1000
    } else {
        330
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let present = || (0..2000u32).filter(|i| cache.contains(i).unwrap()).count();
    while present() > bound {
        assert!(
            std::time::Instant::now() < deadline,
            "{} entries left under a {limit}-byte limit",
            present()
        );
        thread::sleep(Duration::from_millis(10));
    }
    assert!(cache.stats().evictions > 0);
    assert!(present() > 0);
    assert!(cache.contains(&1999u32).unwrap(), "the newest entry stays");
}

fn single_flight_runs_the_function_once_for_eight_threads(f: &Fixture) {
    let cache = f.open();
    let calls = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(std::sync::Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (cache, calls, barrier) = (cache.clone(), Arc::clone(&calls), Arc::clone(&barrier));
            thread::spawn(move || {
                barrier.wait();
                cache
                    .get_or_insert_with("slow", || {
                        calls.fetch_add(1, Ordering::SeqCst);
                        thread::sleep(Duration::from_millis(100));
                        jason()
                    })
                    .unwrap()
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), jason());
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let stats = cache.stats().namespaces["default"];
    assert_eq!((stats.misses, stats.hits), (1, 7));
}

fn single_flight_works_for_async_tasks(f: &Fixture) {
    let cache = f.open();
    let calls = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (cache, calls) = (cache.clone(), Arc::clone(&calls));
            thread::spawn(move || {
                futures_executor::block_on(cache.get_or_insert_with_async("async", || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    thread::sleep(Duration::from_millis(100));
                    41u32 + 1
                }))
                .unwrap()
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 42);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[derive(Debug, PartialEq)]
enum FetchError {
    Down,
    Cache(String),
}

impl From<Error> for FetchError {
    fn from(e: Error) -> Self {
        FetchError::Cache(e.to_string())
    }
}

fn errors_are_not_cached(f: &Fixture) {
    let cache = f.open();
    let calls = AtomicUsize::new(0);
    let fetch = |fail: bool| {
        calls.fetch_add(1, Ordering::SeqCst);
        if fail {
            Err(FetchError::Down)
        } else {
            Ok(jason())
        }
    };
    assert_eq!(
        cache.try_get_or_insert_with("u", || fetch(true)),
        Err(FetchError::Down)
    );
    assert_eq!(
        cache.try_get_or_insert_with("u", || fetch(false)),
        Ok(jason())
    );
    assert_eq!(
        cache.try_get_or_insert_with("u", || fetch(true)),
        Ok(jason()),
        "cached now"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let r =
        futures_executor::block_on(cache.try_get_or_insert_with_async("v", || async {
            Err::<u8, FetchError>(FetchError::Down)
        }));
    assert_eq!(r, Err(FetchError::Down));
    assert_eq!(cache.get::<u8>("v").unwrap(), None);
}

fn namespaces_clear_in_one_step_and_tags_evict_together(f: &Fixture) {
    let cache = f.open();
    let a = cache.namespace("a");
    let b = cache.namespace("b");
    for i in 0..50u32 {
        a.set(&i, &i).unwrap();
        b.set(&i, &i).unwrap();
    }
    a.clear().unwrap();
    assert!((0..50u32).all(|i| !a.contains(&i).unwrap()));
    assert!((0..50u32).all(|i| b.contains(&i).unwrap()));
    a.set(&1u32, &100u32).unwrap();
    assert_eq!(
        a.get::<u32>(&1u32).unwrap(),
        Some(100),
        "the namespace takes new entries"
    );
    assert_eq!(
        a.vacuum().unwrap(),
        50,
        "the old generation's entries are removed"
    );

    let tagged = SetOptions::new().tag("user:jason");
    cache.set_with("profile", &jason(), &tagged).unwrap();
    b.set_with("orders", &vec![1u32], &tagged).unwrap();
    cache.set("untagged", &1u8).unwrap();
    cache.evict_tag("user:jason").unwrap();
    assert_eq!(cache.get::<UserDetail>("profile").unwrap(), None);
    assert_eq!(b.get::<Vec<u32>>("orders").unwrap(), None);
    assert_eq!(cache.get::<u8>("untagged").unwrap(), Some(1));
    cache.set_with("profile", &jason(), &tagged).unwrap();
    assert_eq!(
        cache.get::<UserDetail>("profile").unwrap(),
        Some(jason()),
        "new entries count"
    );
    if f.persistent() {
        drop((cache, a, b));
        let cache = f.open();
        assert!(
            !cache.namespace("a").contains(&2u32).unwrap(),
            "a clear survives reopen"
        );
        assert_eq!(cache.get::<UserDetail>("profile").unwrap(), Some(jason()));
        assert_eq!(
            cache.namespace("b").get::<Vec<u32>>("orders").unwrap(),
            None
        );
    }
}

fn stats_count_per_namespace_and_reset(f: &Fixture) {
    let cache = f.open();
    let ns = cache.namespace("n");
    ns.set("k", &1u8).unwrap();
    ns.get::<u8>("k").unwrap();
    ns.get::<u8>("missing").unwrap();
    let _ = ns.get::<String>("k");
    cache.get::<u8>("x").unwrap();
    let stats = cache.stats();
    let n = stats.namespaces["n"];
    assert_eq!((n.hits, n.misses, n.writes, n.errors), (1, 1, 1, 1));
    assert_eq!(stats.namespaces["default"].misses, 1);
    assert_eq!(stats.total.misses, 2);
    cache.reset_stats();
    assert_eq!(cache.stats().total, logcache::Counts::default());
}

fn the_cache_is_send_sync_and_cheap_to_share(f: &Fixture) {
    fn assert_send_sync<T: Send + Sync + Clone>(_: &T) {}
    let cache = f.open();
    assert_send_sync(&cache);
    let clone = cache.clone();
    clone.set("k", &1u8).unwrap();
    assert_eq!(cache.get::<u8>("k").unwrap(), Some(1));
}

per_backend!(
    typed_values_round_trip_under_any_serde_key,
    every_serde_shape_round_trips,
    delete_and_contains,
    values_persist_across_reopen,
    a_value_of_another_type_is_a_decode_error_for_get,
    get_or_insert_with_recomputes_and_overwrites_a_stale_value,
    changing_the_result_type_invalidates_memoized_results,
    ttl_entries_expire_and_the_default_ttl_applies,
    eviction_keeps_the_cache_under_its_size_limit,
    single_flight_runs_the_function_once_for_eight_threads,
    single_flight_works_for_async_tasks,
    errors_are_not_cached,
    namespaces_clear_in_one_step_and_tags_evict_together,
    stats_count_per_namespace_and_reset,
    the_cache_is_send_sync_and_cheap_to_share,
);

#[test]
fn reads_fill_the_memory_tier() {
    let f = Fixture::new(common::Kind::Disk);
    {
        let disk = f.open();
        disk.set("k", &jason()).unwrap();
    }
    let tiered = logcache::CacheBuilder::new()
        .disk(f.path())
        .memory_tier(logcache::MemoryLimit::Entries(10))
        .build()
        .unwrap();
    assert_eq!(tiered.get::<UserDetail>("k").unwrap(), Some(jason()));
    let _ = Cache::memory(1);
}
