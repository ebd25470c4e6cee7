//! Single flight: when many threads or tasks miss on the same key at once, one (the leader)
//! computes and the others wait for its result instead of computing it again.
//!
//! Two rules keep waiting safe. A blocking (synchronous) caller never waits for a leader that
//! is an async task, nor for itself: the task may need the very thread the caller would block
//! (a `current_thread` runtime), so the caller computes on its own instead. And when a leader
//! fails (an error, a panic, a cancelled future), its waiters do not form a new flight one
//! after another: each computes at once.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::thread::{self, ThreadId};

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

/// The flights in progress, by storage key.
#[derive(Default)]
pub(crate) struct Flights {
    map: Mutex<HashMap<Vec<u8>, Arc<Flight>>>,
    /// How many flights have ended: a caller that missed and finds this unchanged when it
    /// leads a flight knows that no flight stored the key meanwhile, and need not read again.
    ended: AtomicU64,
}

pub(crate) struct Flight {
    leader: Caller,
    state: Mutex<FlightState>,
}

/// How a caller waits: by blocking its thread, or as an async task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Caller {
    Blocking(ThreadId),
    Async,
}

impl Caller {
    /// The calling thread, blocking.
    pub fn blocking() -> Caller {
        Caller::Blocking(thread::current().id())
    }
}

#[derive(Default)]
struct FlightState {
    /// The encoded result, once the leader has one.
    result: Option<Arc<[u8]>>,
    /// The leader gave up (its computation failed or panicked): waiters try themselves.
    abandoned: bool,
    wakers: Vec<Waker>,
}

/// What joining a flight made of the caller.
pub(crate) enum Role<'a> {
    /// Compute, then [`Leader::finish`].
    Leader(Leader<'a>),
    /// Wait for the leader.
    Follower(Arc<Flight>),
}

/// The caller that computes. Dropping it without finishing (an error, a panic, a cancelled
/// future) releases the waiters to try on their own.
pub(crate) struct Leader<'a> {
    flights: &'a Flights,
    key: Vec<u8>,
    flight: Arc<Flight>,
}

impl Flights {
    /// How many flights have ended so far (read it before the read that missed).
    pub fn ended(&self) -> u64 {
        self.ended.load(Ordering::Acquire)
    }

    /// Leads the flight for `key`, or follows the one in progress.
    pub fn join(&self, key: &[u8], caller: Caller) -> Role<'_> {
        let mut map = self.map.lock();
        if let Some(flight) = map.get(key) {
            return Role::Follower(Arc::clone(flight));
        }
        let flight = Arc::new(Flight {
            leader: caller,
            state: Mutex::default(),
        });
        map.insert(key.to_vec(), Arc::clone(&flight));
        Role::Leader(Leader {
            flights: self,
            key: key.to_vec(),
            flight,
        })
    }
}

impl Leader<'_> {
    /// Hands the encoded result to every waiter.
    pub fn finish(self, result: Arc<[u8]>) {
        self.flight.state.lock().result = Some(result);
        // Drop does the rest: leave the map, wake everyone.
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        self.flights.map.lock().remove(&self.key);
        // After the leader stored its value: whoever reads this count afterwards and misses
        // read after the value was stored.
        self.flights.ended.fetch_add(1, Ordering::AcqRel);
        let wakers = {
            let mut state = self.flight.state.lock();
            if state.result.is_none() {
                state.abandoned = true;
            }
            std::mem::take(&mut state.wakers)
        };
        for w in wakers {
            w.wake();
        }
    }
}

impl Flight {
    /// Whether `caller` may wait for this flight's leader without risking to wait forever:
    /// async callers always may; a blocking caller only for a blocking leader on another
    /// thread.
    pub fn can_wait(&self, caller: Caller) -> bool {
        match (caller, self.leader) {
            (Caller::Async, _) => true,
            (Caller::Blocking(me), Caller::Blocking(leader)) => me != leader,
            (Caller::Blocking(_), Caller::Async) => false,
        }
    }

    /// Waits for the leader: its result, or `None` if it gave up.
    pub fn wait_async(self: Arc<Self>) -> FlightWait {
        FlightWait { flight: self }
    }
}

/// Future of [`Flight::wait_async`] (the sync API runs it with `blocking::block_on`).
pub(crate) struct FlightWait {
    flight: Arc<Flight>,
}

impl Future for FlightWait {
    type Output = Option<Arc<[u8]>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.flight.state.lock();
        if let Some(r) = &state.result {
            return Poll::Ready(Some(Arc::clone(r)));
        }
        if state.abandoned {
            return Poll::Ready(None);
        }
        if !state.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            state.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn blocking_callers_wait_only_for_blocking_leaders_on_other_threads() {
        let flights = Flights::default();
        let me = Caller::blocking();
        let _async_leader = flights.join(b"a", Caller::Async);
        let Role::Follower(a) = flights.join(b"a", me) else {
            panic!()
        };
        assert!(!a.can_wait(me));
        assert!(a.can_wait(Caller::Async));
        let _my_own = flights.join(b"b", me);
        let Role::Follower(b) = flights.join(b"b", me) else {
            panic!()
        };
        assert!(!b.can_wait(me), "a thread never waits for itself");
        let other = thread::spawn(Caller::blocking).join().unwrap();
        assert!(b.can_wait(other));
    }

    use std::thread;
    use std::time::Duration;

    use super::*;

    #[test]
    fn followers_get_the_leaders_result() {
        let flights = Flights::default();
        let Role::Leader(leader) = flights.join(b"k", Caller::blocking()) else {
            panic!("first caller leads")
        };
        let Role::Follower(f) = flights.join(b"k", Caller::Async) else {
            panic!("second caller follows")
        };
        assert!(matches!(
            flights.join(b"other", Caller::Async),
            Role::Leader(_)
        ));
        thread::scope(|s| {
            let waiter = s.spawn(|| futures_executor::block_on(f.wait_async()));
            thread::sleep(Duration::from_millis(20));
            leader.finish(Arc::from(&b"result"[..]));
            assert_eq!(waiter.join().unwrap().as_deref(), Some(&b"result"[..]));
        });
        assert!(
            matches!(flights.join(b"k", Caller::Async), Role::Leader(_)),
            "the flight is over"
        );
    }

    #[test]
    fn a_dropped_leader_releases_followers_empty_handed() {
        let flights = Flights::default();
        let leader = flights.join(b"k", Caller::Async);
        let Role::Follower(f) = flights.join(b"k", Caller::Async) else {
            panic!()
        };
        drop(leader);
        let waited = futures_executor::block_on(Arc::clone(&f).wait_async());
        assert_eq!(waited, None);
    }

    #[test]
    fn async_followers_are_woken() {
        let flights = Flights::default();
        let Role::Leader(leader) = flights.join(b"k", Caller::Async) else {
            panic!()
        };
        let Role::Follower(f) = flights.join(b"k", Caller::Async) else {
            panic!()
        };
        thread::scope(|s| {
            let waiter = s.spawn(move || futures_executor::block_on(f.wait_async()));
            thread::sleep(Duration::from_millis(20));
            leader.finish(Arc::from(&b"r"[..]));
            assert_eq!(waiter.join().unwrap().as_deref(), Some(&b"r"[..]));
        });
    }
}
