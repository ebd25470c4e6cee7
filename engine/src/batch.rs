//! Atomic write batches.

use std::time::Duration;

use crate::clock::expiry_after;
use crate::record;

/// One operation of a [`WriteBatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BatchOp {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        expires_at: u64,
    },
    Delete {
        key: Vec<u8>,
    },
}

impl BatchOp {
    pub fn key(&self) -> &[u8] {
        match self {
            BatchOp::Put { key, .. } | BatchOp::Delete { key } => key,
        }
    }

    /// Bytes the operation's record takes in a segment, padding included.
    pub fn encoded_len(&self) -> usize {
        match self {
            BatchOp::Put { key, value, .. } => record::padded_len(key.len(), value.len()),
            BatchOp::Delete { key } => record::padded_len(key.len(), 0),
        }
    }
}

/// Puts and deletes applied atomically by [`Store::write_batch`](crate::Store::write_batch):
/// after a crash, either all of them are in the store or none is. Later operations on the same
/// key win over earlier ones.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// use logcache_engine::{Options, Store, WriteBatch};
/// let store = Store::open(dir.path(), Options::default())?;
/// let mut batch = WriteBatch::new();
/// batch.put(b"from", b"90").put(b"to", b"110").delete(b"pending");
/// store.write_batch(&batch)?;
/// assert_eq!(store.get(b"to")?.as_deref(), Some(&b"110"[..]));
/// # Ok::<(), logcache_engine::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    pub(crate) ops: Vec<BatchOp>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a put.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> &mut Self {
        self.push_put(key, value, 0)
    }

    /// Adds a put that expires `ttl` from now.
    pub fn put_with_ttl(&mut self, key: &[u8], value: &[u8], ttl: Duration) -> &mut Self {
        self.push_put(key, value, expiry_after(ttl))
    }

    /// Adds a delete.
    pub fn delete(&mut self, key: &[u8]) -> &mut Self {
        self.ops.push(BatchOp::Delete { key: key.to_vec() });
        self
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the batch has no operations.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Removes all operations.
    pub fn clear(&mut self) {
        self.ops.clear();
    }

    fn push_put(&mut self, key: &[u8], value: &[u8], expires_at: u64) -> &mut Self {
        self.ops.push(BatchOp::Put {
            key: key.to_vec(),
            value: value.to_vec(),
            expires_at,
        });
        self
    }
}
