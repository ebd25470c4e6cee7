//! Running the async core of the cache from its synchronous API: poll the future on this
//! thread and park between polls.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};

struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs `future` to completion on the calling thread.
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(out) => return out,
            // A spurious wake-up just polls again.
            Poll::Pending => thread::park(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_and_woken_futures_complete() {
        assert_eq!(block_on(async { 7 }), 7);
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = Arc::clone(&flag);
        let woken = std::future::poll_fn(move |cx| {
            if seen.load(std::sync::atomic::Ordering::SeqCst) {
                return Poll::Ready(1);
            }
            let waker = cx.waker().clone();
            let (tx, seen) = (tx.clone(), Arc::clone(&seen));
            thread::spawn(move || {
                thread::sleep(std::time::Duration::from_millis(10));
                seen.store(true, std::sync::atomic::Ordering::SeqCst);
                let _ = tx.send(());
                waker.wake();
            });
            Poll::Pending
        });
        assert_eq!(block_on(woken), 1);
        rx.recv().unwrap();
        assert!(flag.load(std::sync::atomic::Ordering::SeqCst));
    }
}
