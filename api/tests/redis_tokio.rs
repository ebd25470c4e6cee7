//! The Redis backend from tokio (features `redis` and `tokio`): memoized async functions on
//! a multi-threaded runtime compute once per key, and the runtime's other tasks keep running
//! while calls wait on the server.
#![cfg(all(feature = "redis", feature = "tokio"))]

mod common;

use std::sync::LazyLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use logcache::{Cache, CacheBuilder, RedisBackend, memoize};

static CACHE: LazyLock<Cache> = LazyLock::new(|| {
    let url = common::redis_url().expect("checked by the test");
    let backend = RedisBackend::open(&url)
        .unwrap()
        .with_prefix(format!("tokio-test:{}:", std::process::id()));
    CacheBuilder::new().backend(backend).build().unwrap()
});

static CALLS: AtomicUsize = AtomicUsize::new(0);

#[memoize(cache = CACHE)]
async fn slow_lookup(id: u32) -> String {
    CALLS.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    format!("user {id}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memoized_async_calls_on_redis_share_one_computation() {
    if common::redis_url().is_none() {
        return;
    }
    let ticks = std::sync::Arc::new(AtomicUsize::new(0));
    let ticker = {
        let ticks = std::sync::Arc::clone(&ticks);
        tokio::spawn(async move {
            for _ in 0..20 {
                tokio::time::sleep(Duration::from_millis(5)).await;
                ticks.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let calls: Vec<_> = (0..8).map(|_| tokio::spawn(slow_lookup(7))).collect();
    for c in calls {
        assert_eq!(c.await.unwrap(), "user 7");
    }
    ticker.await.unwrap();
    assert_eq!(
        CALLS.load(Ordering::SeqCst),
        1,
        "one computation for eight tasks"
    );
    assert_eq!(ticks.load(Ordering::SeqCst), 20, "other tasks kept running");
    assert_eq!(slow_lookup(7).await, "user 7");
    assert_eq!(CALLS.load(Ordering::SeqCst), 1);
}
