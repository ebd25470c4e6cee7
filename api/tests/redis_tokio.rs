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

/// A fake Redis server for one connection: answers the connection's set-up commands with
/// `+OK`, and the `GET`s only once `gets` of them have arrived, all at once (nil each). A
/// client that sends one command and waits for its answer before the next never gets one.
fn server_answering_gets_in_a_batch(gets: usize) -> u16 {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut out = stream.try_clone().unwrap();
        let mut input = BufReader::new(stream);
        let mut waiting = 0;
        loop {
            // A command: *N, then N bulk strings.
            let mut line = String::new();
            if input.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let n: usize = line.trim_start_matches('*').trim().parse().unwrap();
            let mut words = Vec::new();
            for _ in 0..n {
                line.clear();
                input.read_line(&mut line).unwrap();
                let len: usize = line.trim_start_matches('$').trim().parse().unwrap();
                let mut word = vec![0; len + 2];
                input.read_exact(&mut word).unwrap();
                words.push(String::from_utf8_lossy(&word[..len]).to_uppercase());
            }
            if words[0] == "GET" {
                waiting += 1;
                if waiting == gets {
                    out.write_all(&b"$-1\r\n".repeat(gets)).unwrap();
                    waiting = 0;
                }
            } else {
                out.write_all(b"+OK\r\n").unwrap();
            }
        }
    });
    port
}

/// Eight gets of raw keys at once on `backend`, which talks to a server that answers none
/// until all eight are in: they must all be waiting at once, on this one thread (a blocking
/// call would hold it, and time out).
async fn eight_gets_wait_at_once(backend: impl logcache::Backend + 'static) {
    let backend = std::sync::Arc::new(backend);
    assert!(backend.is_async());
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let backend = std::sync::Arc::clone(&backend);
            tokio::spawn(async move { backend.get_async(format!("raw-{i}").as_bytes()).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), None);
    }
}

fn batch_answering_backend() -> RedisBackend {
    let port = server_answering_gets_in_a_batch(8);
    RedisBackend::open(&format!("redis://127.0.0.1:{port}/0"))
        .unwrap()
        .with_timeout(Duration::from_secs(5))
}

#[tokio::test(flavor = "current_thread")]
async fn one_thread_serves_concurrent_calls_over_one_multiplexed_connection() {
    eight_gets_wait_at_once(batch_answering_backend()).await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_memory_tier_in_front_waits_on_redis_without_holding_the_thread() {
    eight_gets_wait_at_once(logcache::TieredBackend::new(
        logcache::MemoryBackend::new(logcache::MemoryLimit::Entries(100)),
        batch_answering_backend(),
    ))
    .await;
}

static CURRENT_THREAD_CALLS: AtomicUsize = AtomicUsize::new(0);

#[tokio::test(flavor = "current_thread")]
async fn memoized_async_calls_work_on_a_current_thread_runtime() {
    let Some(url) = common::redis_url() else {
        return;
    };
    let cache = std::sync::Arc::new(
        CacheBuilder::new()
            .backend(
                RedisBackend::open(&url)
                    .unwrap()
                    .with_prefix(format!("tokio-current:{}:", std::process::id())),
            )
            .build()
            .unwrap(),
    );
    let spec = logcache::memo::MemoSpec::new("redis_tokio::current_thread");
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (cache, spec) = (std::sync::Arc::clone(&cache), spec.clone());
            tokio::spawn(async move {
                logcache::memo::memoize_async(&cache, &spec, &(5u32,), || async {
                    CURRENT_THREAD_CALLS.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    25u32
                })
                .await
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), 25);
    }
    assert_eq!(CURRENT_THREAD_CALLS.load(Ordering::SeqCst), 1);
    cache.set_async("k", &"v".to_string()).await.unwrap();
    assert_eq!(
        cache.get_async::<String>("k").await.unwrap().as_deref(),
        Some("v")
    );
}
