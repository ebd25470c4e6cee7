//! Stampede protection across processes and machines: while one caller computes the value of
//! a key that missed, it holds the key's lease in the backend (Redis: `SET ... NX PX`), and
//! callers elsewhere that miss too wait for its value instead of computing it again.
//!
//! A lease expires on its own: a holder that dies, or computes for longer than its lease, lets
//! the next caller that asks take it over. A waiter asks again and again, a little less often
//! each time, and stops waiting after two leases (one for the holder's lease to run out, one
//! for whoever takes it over to compute): then it computes itself. Inside one process the single flight (`flight`) already makes callers wait for
//! each other; leases only reach further.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::backend::{Backend, Leased};
use crate::error::Result;
use crate::flight::Caller;

/// How long a computing caller holds a key's lease unless the cache is told otherwise.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);

/// The first pause between two looks of a waiter; each next one is twice as long, up to
/// [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(2);
const MAX_PAUSE: Duration = Duration::from_millis(100);

/// What a caller that missed knows about the key's lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LeaseState {
    /// No lease is used (the backend has none, the cache or the function opted out, or the
    /// backend failed).
    Unused,
    /// This caller holds it under this token.
    Held(u64),
    /// Another caller holds it: wait for its value.
    Elsewhere,
    /// The backend failed on the read (unreachable, a timeout): compute, and do not store, so
    /// that the call waits on the backend once at most.
    Failed,
}

/// A token no other caller, in any process or machine, uses at the same time: the time, the
/// process id and a count, mixed.
pub(crate) fn new_token() -> u64 {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut x = nanos
        ^ (u64::from(std::process::id()) << 40)
        ^ COUNT
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    // splitmix64's finalizer, so that nearby inputs give unrelated tokens.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// What waiting for another caller's lease ended with.
pub(crate) enum Waited {
    /// Its value (the stored bytes).
    Found(Vec<u8>),
    /// The lease, now this caller's (`Held`), or none (`Unused`: waited long enough, or the
    /// backend failed): compute.
    Compute(LeaseState),
}

/// Waits until the value of `key` is stored or its lease can be taken, for at most two leases.
/// A blocking caller sleeps; an async one awaits a timer.
pub(crate) async fn wait(
    backend: &dyn Backend,
    key: &[u8],
    lease: Duration,
    caller: Caller,
) -> Result<Waited> {
    let deadline = Instant::now() + lease.saturating_mul(2);
    let mut pause = FIRST_PAUSE;
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Ok(Waited::Compute(LeaseState::Unused));
        }
        sleep(pause.min(deadline - now), caller).await;
        pause = (pause * 2).min(MAX_PAUSE);
        let token = new_token();
        let read = match caller {
            Caller::Async if backend.is_async() => {
                backend.read_or_lease_async(key, token, lease).await
            }
            _ => backend.read_or_lease(key, token, lease),
        };
        match read? {
            Leased::Found(bytes) => return Ok(Waited::Found(bytes)),
            Leased::Taken => return Ok(Waited::Compute(LeaseState::Held(token))),
            Leased::HeldElsewhere => {}
        }
    }
}

/// Sleeps for `d`: the thread of a blocking caller, or as a future woken by a timer thread.
async fn sleep(d: Duration, caller: Caller) {
    match caller {
        Caller::Blocking(_) => std::thread::sleep(d),
        Caller::Async => Sleep::new(d).await,
    }
}

/// A future that is ready once its duration has passed, without a runtime's timer: a thread
/// sleeps and wakes it (waiting happens at most every few milliseconds, so a thread each time
/// costs little).
struct Sleep {
    done: Arc<AtomicBool>,
    duration: Option<Duration>,
}

impl Sleep {
    fn new(duration: Duration) -> Sleep {
        Sleep {
            done: Arc::new(AtomicBool::new(false)),
            duration: Some(duration),
        }
    }
}

impl Future for Sleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.done.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        if let Some(duration) = self.duration.take() {
            let (done, waker) = (Arc::clone(&self.done), cx.waker().clone());
            std::thread::spawn(move || {
                std::thread::sleep(duration);
                done.store(true, Ordering::Release);
                waker.wake();
            });
        }
        Poll::Pending
    }
}

/// Gives a held lease back when dropped, unless [`disarm`](LeaseGuard::disarm)ed: the
/// computation failed, panicked or was cancelled, and other callers should not wait for the
/// lease to expire.
pub(crate) struct LeaseGuard<'a> {
    backend: &'a dyn Backend,
    key: &'a [u8],
    token: Option<u64>,
}

impl<'a> LeaseGuard<'a> {
    pub fn new(backend: &'a dyn Backend, key: &'a [u8], state: LeaseState) -> LeaseGuard<'a> {
        let token = match state {
            LeaseState::Held(token) => Some(token),
            LeaseState::Unused | LeaseState::Elsewhere | LeaseState::Failed => None,
        };
        LeaseGuard {
            backend,
            key,
            token,
        }
    }

    /// The token, if a lease is held.
    pub fn token(&self) -> Option<u64> {
        self.token
    }

    /// The value was stored and the lease given back with it.
    pub fn disarm(mut self) {
        self.token = None;
    }
}

impl Drop for LeaseGuard<'_> {
    fn drop(&mut self) {
        if let Some(token) = self.token {
            // Best effort: if this fails too, the lease expires on its own.
            let _ = self.backend.release_lease(self.key, token);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_differ() {
        let tokens: std::collections::HashSet<u64> = (0..10_000).map(|_| new_token()).collect();
        assert_eq!(tokens.len(), 10_000);
    }

    #[test]
    fn the_async_sleep_wakes_up() {
        let start = Instant::now();
        crate::blocking::block_on(Sleep::new(Duration::from_millis(20)));
        assert!(start.elapsed() >= Duration::from_millis(20));
    }
}
