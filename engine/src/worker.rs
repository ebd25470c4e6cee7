//! The background thread: writes hint files for sealed segments and compacts when enough of
//! the log is dead.

use std::sync::Arc;
use std::thread::{self, JoinHandle};

use parking_lot::{Condvar, Mutex};

use crate::store::Inner;

/// Handle to the background thread; stopping it waits for it to finish.
#[derive(Debug)]
pub(crate) struct Worker {
    stop: Arc<(Mutex<bool>, Condvar)>,
    handle: Option<JoinHandle<()>>,
}

impl Worker {
    /// Starts the thread.
    pub fn spawn(inner: Arc<Inner>) -> std::io::Result<Worker> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let signal = Arc::clone(&stop);
        let handle = thread::Builder::new()
            .name("logcache-compaction".into())
            .spawn(move || {
                let interval = inner.options.compaction_interval;
                loop {
                    {
                        let mut stopped = signal.0.lock();
                        if !*stopped {
                            signal.1.wait_for(&mut stopped, interval);
                        }
                        if *stopped {
                            return;
                        }
                    }
                    inner.background_pass();
                }
            })?;
        Ok(Worker {
            stop,
            handle: Some(handle),
        })
    }

    /// Asks the thread to stop and waits for it. A compaction in progress notices the store's
    /// closing flag and stops early.
    pub fn stop(&mut self) {
        *self.stop.0.lock() = true;
        self.stop.1.notify_all();
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
