//! The background thread: writes hint files for sealed segments, compacts when enough of the
//! log is dead, and evicts the oldest segments when the store is over its size limit.

use std::sync::Arc;
use std::thread::{self, JoinHandle};

use parking_lot::{Condvar, Mutex};

use crate::store::Inner;

/// How the store talks to its background thread.
#[derive(Debug, Default)]
pub(crate) struct Signal {
    state: Mutex<SignalState>,
    cv: Condvar,
}

#[derive(Debug, Default)]
struct SignalState {
    stop: bool,
    kicked: bool,
}

impl Signal {
    /// Asks for a pass now rather than at the next interval.
    pub fn kick(&self) {
        self.state.lock().kicked = true;
        self.cv.notify_all();
    }

    fn stop(&self) {
        self.state.lock().stop = true;
        self.cv.notify_all();
    }
}

/// Handle to the background thread; stopping it waits for it to finish.
#[derive(Debug)]
pub(crate) struct Worker {
    inner: Arc<Inner>,
    handle: Option<JoinHandle<()>>,
}

impl Worker {
    /// Starts the thread.
    pub fn spawn(inner: Arc<Inner>) -> std::io::Result<Worker> {
        let shared = Arc::clone(&inner);
        let handle = thread::Builder::new()
            .name("logcache-background".into())
            .spawn(move || {
                let interval = shared.options.compaction_interval;
                loop {
                    {
                        let signal = &shared.signal;
                        let mut state = signal.state.lock();
                        if !state.stop && !state.kicked {
                            signal.cv.wait_for(&mut state, interval);
                        }
                        if state.stop {
                            return;
                        }
                        state.kicked = false;
                    }
                    shared.background_pass();
                }
            })?;
        Ok(Worker {
            inner,
            handle: Some(handle),
        })
    }

    /// Asks the thread to stop and waits for it. A compaction in progress notices the store's
    /// closing flag and stops early.
    pub fn stop(&mut self) {
        self.inner.signal.stop();
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop();
    }
}
