//! The background thread: writes hint files for sealed segments, compacts when enough of the
//! log is dead, and evicts the oldest segments when the store is over its size limit.

use std::sync::Arc;
use std::thread::{self, JoinHandle};

use crate::maintenance;
use crate::shared::Shared;

/// Handle to the background thread; stopping it waits for it to finish.
#[derive(Debug)]
pub(crate) struct Worker {
    shared: Arc<Shared>,
    handle: Option<JoinHandle<()>>,
}

impl Worker {
    /// Starts the thread.
    pub fn spawn(shared: Arc<Shared>) -> std::io::Result<Worker> {
        let state = Arc::clone(&shared);
        let handle = thread::Builder::new()
            .name("logcache-background".into())
            .spawn(move || {
                let interval = state.options.compaction_interval;
                while state.signal.wait(interval) {
                    maintenance::background_pass(&state);
                }
            })?;
        Ok(Worker {
            shared,
            handle: Some(handle),
        })
    }

    /// Asks the thread to stop and waits for it. A compaction in progress notices the store's
    /// closing flag and stops early.
    pub fn stop(&mut self) {
        self.shared.signal.stop();
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
