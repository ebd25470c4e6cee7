//! Single flight at its edges: a leader that fails, and a synchronous caller meeting an async
//! leader on the same thread.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use logcache::{Cache, Error};

#[derive(Debug, PartialEq)]
enum ApiError {
    Unavailable,
    Cache(String),
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError::Cache(e.to_string())
    }
}

/// Waits until `counter` reaches `n`, for at most five seconds; whether it did.
fn wait_for(counter: &AtomicUsize, n: usize) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while counter.load(Ordering::SeqCst) < n {
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(1));
    }
    true
}

/// Eight callers miss on one key; the leader's computation fails. The seven that waited must
/// then compute at once, side by side, not one after another: each of their computations
/// waits until all seven are running, which in series would never happen.
#[test]
fn when_the_leader_fails_its_waiters_compute_at_once() {
    let cache = Cache::memory(100);
    let arrived = Arc::new(AtomicUsize::new(0));
    let running = Arc::new(AtomicUsize::new(0));
    let all_ran_together = Arc::new(AtomicUsize::new(0));
    let leading = Arc::new(Barrier::new(2));
    let leader = {
        let (cache, arrived, leading) = (cache.clone(), Arc::clone(&arrived), Arc::clone(&leading));
        thread::spawn(move || {
            cache.try_get_or_insert_with("k", || {
                leading.wait();
                // Give the followers time to join the flight before failing.
                wait_for(&arrived, 7);
                thread::sleep(Duration::from_millis(100));
                Err::<u32, ApiError>(ApiError::Unavailable)
            })
        })
    };
    leading.wait();
    let followers: Vec<_> = (0..7)
        .map(|_| {
            let (cache, arrived, running, together) = (
                cache.clone(),
                Arc::clone(&arrived),
                Arc::clone(&running),
                Arc::clone(&all_ran_together),
            );
            thread::spawn(move || {
                arrived.fetch_add(1, Ordering::SeqCst);
                cache.try_get_or_insert_with("k", || {
                    running.fetch_add(1, Ordering::SeqCst);
                    if wait_for(&running, 7) {
                        together.fetch_add(1, Ordering::SeqCst);
                    }
                    Err::<u32, ApiError>(ApiError::Unavailable)
                })
            })
        })
        .collect();
    assert_eq!(leader.join().unwrap(), Err(ApiError::Unavailable));
    for f in followers {
        assert_eq!(f.join().unwrap(), Err(ApiError::Unavailable));
    }
    assert_eq!(
        all_ran_together.load(Ordering::SeqCst),
        7,
        "the waiters' computations ran side by side"
    );
    assert_eq!(
        cache.get::<u32>("k").unwrap(),
        None,
        "errors are not stored"
    );
}

/// In a `current_thread` runtime, a task is inside `get_or_insert_with_async("k")` when code on
/// the same thread calls the synchronous `get_or_insert_with("k")`. Waiting for the task would
/// block the only thread that can run it: the synchronous call computes on its own instead.
#[test]
fn a_blocking_call_never_waits_for_an_async_leader() {
    let (done, finished) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let result = runtime.block_on(async {
            let cache = Cache::memory(100);
            let inside = Arc::new(AtomicUsize::new(0));
            let task = {
                let (cache, inside) = (cache.clone(), Arc::clone(&inside));
                tokio::spawn(async move {
                    cache
                        .get_or_insert_with_async("k", || async move {
                            inside.store(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            1u32
                        })
                        .await
                        .unwrap()
                })
            };
            while inside.load(Ordering::SeqCst) == 0 {
                tokio::task::yield_now().await;
            }
            let blocking = cache.get_or_insert_with("k", || 2u32).unwrap();
            (blocking, task.await.unwrap())
        });
        let _ = done.send(result);
    });
    let (blocking, task) = finished
        .recv_timeout(Duration::from_secs(20))
        .expect("the synchronous call returned (it used to wait forever)");
    assert_eq!((blocking, task), (2, 1));
}

/// A computation that calls `get_or_insert_with` on its own key does not wait for itself.
#[test]
fn a_computation_that_asks_for_its_own_key_does_not_deadlock() {
    let cache = Cache::memory(100);
    let inner = cache.clone();
    let v = cache
        .get_or_insert_with("k", move || {
            inner.get_or_insert_with("k", || 5u32).unwrap() + 1
        })
        .unwrap();
    assert_eq!(v, 6);
}
