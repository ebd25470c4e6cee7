//! The engine interface the workloads run on, and logcache's engine behind it.

use std::path::Path;

/// A 16-byte key.
pub type Key = [u8; 16];

/// One engine under test. Every method panics on an engine error: a benchmark that hits one
/// is void.
pub trait Engine: Sync + Sized {
    /// Opens (or creates) the store in `dir`.
    fn open(dir: &Path) -> Self;
    /// Writes `items` in one batch; durable only if `sync`.
    fn write_batch(&self, items: &[(Key, &[u8])], sync: bool);
    /// One write, not made durable.
    fn put(&self, key: &Key, value: &[u8]);
    /// One durable write.
    fn put_durable(&self, key: &Key, value: &[u8]);
    /// The value of `key`, copied out.
    fn get(&self, key: &Key) -> Option<Vec<u8>>;
    /// Makes everything written durable.
    fn sync(&self);
    /// Runs the engine's own full compaction, if it offers one; false if it has none.
    fn compact(&mut self) -> bool {
        false
    }
    /// Untimed work before the durable writes (Redis switches its append-only file on).
    fn prepare_durable(&self) {}
    /// Untimed work before reading what was written (only the raw reference needs it).
    fn reindex(&mut self) {}
    /// The process whose memory is measured.
    fn memory_pid(&self) -> u32 {
        std::process::id()
    }
    /// Closes the store (dropping it by default).
    fn close(self) {}
}

/// logcache's engine with its default options and `Durability::None`: durability comes from
/// `sync`, as with the others.
pub struct Logcache(logcache_engine::Store);

impl Engine for Logcache {
    fn open(dir: &Path) -> Self {
        let opts =
            logcache_engine::Options::default().durability(logcache_engine::Durability::None);
        Logcache(logcache_engine::Store::open(dir, opts).unwrap())
    }
    fn write_batch(&self, items: &[(Key, &[u8])], sync: bool) {
        let mut batch = logcache_engine::WriteBatch::new();
        for (k, v) in items {
            batch.put(k, v);
        }
        self.0.write_batch(&batch).unwrap();
        if sync {
            self.0.sync().unwrap();
        }
    }
    fn put(&self, key: &Key, value: &[u8]) {
        self.0.put(key, value).unwrap();
    }
    fn put_durable(&self, key: &Key, value: &[u8]) {
        self.0.put(key, value).unwrap();
        self.0.sync().unwrap();
    }
    fn get(&self, key: &Key) -> Option<Vec<u8>> {
        self.0.get(key).unwrap()
    }
    fn sync(&self) {
        self.0.sync().unwrap();
    }
    fn compact(&mut self) -> bool {
        self.0.compact().unwrap();
        true
    }
    fn close(self) {
        self.0.close().unwrap();
    }
}
