//! Group commit: concurrent `Durability::Sync` writers share one fdatasync.
//!
//! Every writer hands its record to the OS under the writer lock and notes the log position
//! after it. It then asks for that position to be durable. The first to ask becomes the
//! leader: it flushes, takes the current end of the log, and runs one fdatasync covering every
//! write up to there, while later writers wait. When it is done, every waiter whose position
//! is covered returns without an fsync of its own; the rest elect the next leader.

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Condvar, Mutex};

use crate::error::{Error, Result};
use crate::writer::Writer;

#[derive(Debug, Default)]
struct State {
    /// Log position known durable.
    synced: u64,
    /// Whether a leader is syncing now.
    syncing: bool,
}

/// Shared by all writers of one store.
#[derive(Debug, Default)]
pub(crate) struct GroupCommit {
    state: Mutex<State>,
    done: Condvar,
    /// fdatasync calls made through group commit.
    syncs: AtomicU64,
}

impl GroupCommit {
    /// fdatasync calls made so far.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// Returns once every write up to log position `lsn` is on disk. Takes the writer lock
    /// only briefly, never while holding its own lock.
    pub fn sync_to(&self, lsn: u64, writer: &Mutex<Writer>) -> Result<()> {
        let mut state = self.state.lock();
        loop {
            if state.synced >= lsn {
                return Ok(());
            }
            if !state.syncing {
                break;
            }
            self.done.wait(&mut state);
        }
        state.syncing = true;
        drop(state);

        let result = self.sync_log(writer);

        let mut state = self.state.lock();
        state.syncing = false;
        if let Ok(target) = result {
            state.synced = state.synced.max(target);
        }
        self.done.notify_all();
        result.map(|_| ())
    }

    /// Flushes and fsyncs the active segment; returns the log position now durable.
    fn sync_log(&self, writer: &Mutex<Writer>) -> Result<u64> {
        let (segment, target) = writer.lock().sync_target()?;
        let Some(segment) = segment else {
            return Ok(target);
        };
        self.syncs.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = segment.sync_data() {
            // After a failed fsync the kernel may have dropped the dirty pages: nothing written
            // since the last good sync can be trusted, so refuse further writes.
            writer
                .lock()
                .disable(format!("fsync of segment {} failed: {e}", segment.id()));
            return Err(Error::io("syncing a segment", segment.path(), e));
        }
        Ok(target)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::thread;
    use std::time::Duration;

    use parking_lot::RwLock;

    use super::*;
    use crate::options::{Durability, Options};
    use crate::record;

    fn writer_with_records(
        dir: &std::path::Path,
        n: usize,
    ) -> (
        Mutex<Writer>,
        RwLock<BTreeMap<u64, Arc<crate::segment::Segment>>>,
    ) {
        let opts = Options::default().durability(Durability::Flush);
        let mut writer = Writer::new(dir.to_path_buf(), &opts, None, 1 << 20);
        let segments = RwLock::new(BTreeMap::new());
        for i in 0..n {
            let key = i.to_le_bytes();
            writer
                .append(record::padded_len(8, 3), &segments, |buf| {
                    record::encode_to(buf, 0, 0, &key, b"abc")
                })
                .unwrap();
        }
        (Mutex::new(writer), segments)
    }

    #[test]
    fn waiting_writers_share_one_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, segments) = writer_with_records(dir.path(), 8);
        let written = writer.lock().written();
        let commit = Arc::new(GroupCommit::default());
        let writer = Arc::new(writer);
        // While the test holds the writer, whichever thread leads blocks before its fsync and
        // every other thread queues behind it; one fsync then covers all of them.
        let held = writer.lock();
        let threads: Vec<_> = (0..8u64)
            .map(|i| {
                let (commit, writer) = (Arc::clone(&commit), Arc::clone(&writer));
                thread::spawn(move || commit.sync_to(written - i, &writer).unwrap())
            })
            .collect();
        thread::sleep(Duration::from_millis(50));
        drop(held);
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(commit.syncs(), 1);
        commit.sync_to(written, &writer).unwrap();
        assert_eq!(commit.syncs(), 1, "already durable: no second fsync");

        let key = 99u64.to_le_bytes();
        let more = writer
            .lock()
            .append(record::padded_len(8, 3), &segments, |buf| {
                record::encode_to(buf, 0, 0, &key, b"abc")
            })
            .unwrap();
        assert!(more.offset > 0);
        let written = writer.lock().written();
        commit.sync_to(written, &writer).unwrap();
        assert_eq!(commit.syncs(), 2);
    }

    #[test]
    fn nothing_written_needs_no_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, _segments) = writer_with_records(dir.path(), 0);
        let commit = GroupCommit::default();
        commit.sync_to(0, &writer).unwrap();
        assert_eq!(commit.syncs(), 0);
    }
}
