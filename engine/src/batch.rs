//! Atomic write batches.

use std::time::Duration;

use crate::clock::expiry_after;
use crate::writer::Change;

/// One operation of a [`WriteBatch`]; its key and value lie in the batch's byte buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Op {
    /// Where its key starts in the buffer; the value follows the key.
    at: usize,
    key_len: usize,
    value_len: usize,
    expires_at: u64,
    delete: bool,
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
    ops: Vec<Op>,
    /// Keys and values, one after the other: one allocation for the whole batch.
    bytes: Vec<u8>,
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
        self.push(key, &[], 0, true)
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
        self.bytes.clear();
    }

    fn push_put(&mut self, key: &[u8], value: &[u8], expires_at: u64) -> &mut Self {
        self.push(key, value, expires_at, false)
    }

    fn push(&mut self, key: &[u8], value: &[u8], expires_at: u64, delete: bool) -> &mut Self {
        self.ops.push(Op {
            at: self.bytes.len(),
            key_len: key.len(),
            value_len: value.len(),
            expires_at,
            delete,
        });
        self.bytes.extend_from_slice(key);
        self.bytes.extend_from_slice(value);
        self
    }

    /// The operations, in order, as changes to write.
    pub(crate) fn changes(&self) -> impl ExactSizeIterator<Item = Change<'_>> {
        self.ops.iter().map(|op| {
            let key = &self.bytes[op.at..op.at + op.key_len];
            if op.delete {
                Change::Delete { key }
            } else {
                let value_at = op.at + op.key_len;
                Change::Put {
                    key,
                    value: &self.bytes[value_at..value_at + op.value_len],
                    expires_at: op.expires_at,
                }
            }
        })
    }
}
