//! Per-thread buffers for building keys and entries, so that a hit or a write allocates
//! nothing of its own.

use std::cell::RefCell;

/// Buffers that grew past this are not kept (one huge key should not pin its memory).
const KEEP: usize = 64 << 10;

#[derive(Default)]
pub(crate) struct Buffers {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

thread_local! {
    static BUFFERS: RefCell<Buffers> = const {
        RefCell::new(Buffers {
            key: Vec::new(),
            value: Vec::new(),
        })
    };
}

/// Runs `f` with this thread's buffers, empty. A nested call (a `Serialize` impl or backend
/// that uses a cache itself) gets fresh ones.
#[inline]
pub(crate) fn with_buffers<R>(f: impl FnOnce(&mut Buffers) -> R) -> R {
    BUFFERS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buffers) => {
            buffers.key.clear();
            buffers.value.clear();
            let result = f(&mut buffers);
            if buffers.key.capacity() > KEEP {
                buffers.key = Vec::new();
            }
            if buffers.value.capacity() > KEEP {
                buffers.value = Vec::new();
            }
            result
        }
        Err(_) => f(&mut Buffers::default()),
    })
}

/// Runs `f` with this thread's key buffer, empty (see [`with_buffers`]).
#[inline]
pub(crate) fn with_key_buffer<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    BUFFERS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buffers) => {
            buffers.key.clear();
            let result = f(&mut buffers.key);
            if buffers.key.capacity() > KEEP {
                buffers.key = Vec::new();
            }
            result
        }
        Err(_) => f(&mut Vec::new()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_use_gets_its_own_buffers() {
        with_buffers(|outer| {
            outer.key.extend_from_slice(b"outer");
            with_buffers(|inner| {
                assert!(inner.key.is_empty());
                inner.key.extend_from_slice(b"inner");
            });
            assert_eq!(outer.key, b"outer");
        });
        with_buffers(|again| assert!(again.key.is_empty() && again.value.is_empty()));
    }
}
