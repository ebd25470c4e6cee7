//! Namespaces: each has its own keys (a prefix and a generation that `clear` moves on) and its
//! own statistics. All handles on one namespace of one cache share one `Namespace`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;

use crate::backend::Backend;
use crate::codec;
use crate::error::Result;
use crate::stats::{AtomicCounts, Counts};

pub(crate) struct Namespace {
    pub name: Arc<str>,
    /// The name, encoded (a MessagePack string): every key of the namespace starts with it,
    /// then the generation (a MessagePack integer).
    prefix: Box<[u8]>,
    /// The backend counter that holds the generation.
    counter: Box<str>,
    pub counts: AtomicCounts,
    /// The generation plus one, 0 while unknown. Kept for backends whose counters change
    /// through this process alone, or that say when they change (`Backend::counters_epoch`);
    /// only ever raised.
    known: AtomicU64,
    /// The backend's counters epoch plus one at which `known` was read (0: none).
    known_at: AtomicU64,
}

impl Namespace {
    fn new(name: &str) -> Namespace {
        let mut prefix = Vec::with_capacity(5 + name.len());
        codec::encode_key_into(name, &mut prefix).expect("a string encodes");
        Namespace {
            name: Arc::from(name),
            prefix: prefix.into(),
            counter: Namespace::counter_name(name).into(),
            counts: AtomicCounts::default(),
            known: AtomicU64::new(0),
            known_at: AtomicU64::new(0),
        }
    }

    /// The namespace's current generation. `private`: the backend's counters change only
    /// through this process (`Backend::counters_are_private`), so a value read once is kept.
    #[inline]
    pub fn generation(&self, backend: &dyn Backend, private: bool) -> Result<u64> {
        if !private {
            let Some(epoch) = backend.counters_epoch() else {
                return backend.counter(&self.counter);
            };
            // What was read at this epoch is still the generation (or a newer one, whose
            // epoch is about to be published): counters only go up.
            if self.known_at.load(Ordering::Acquire) == epoch + 1 {
                return Ok(self.known.load(Ordering::Acquire).saturating_sub(1));
            }
            let generation = backend.counter(&self.counter)?;
            self.raise(generation);
            self.known_at.store(epoch + 1, Ordering::Release);
            return Ok(generation);
        }
        match self.known.load(Ordering::Acquire) {
            0 => {
                let generation = backend.counter(&self.counter)?;
                self.raise(generation);
                Ok(generation)
            }
            known => Ok(known - 1),
        }
    }

    /// Moves to a new generation (`clear`).
    pub fn advance(&self, backend: &dyn Backend) -> Result<u64> {
        let generation = backend.increment(&self.counter)?;
        self.raise(generation);
        Ok(generation)
    }

    /// Notes `generation`; a stale value read before a concurrent `advance` can never lower
    /// what is known.
    fn raise(&self, generation: u64) {
        self.known
            .fetch_max(generation.saturating_add(1), Ordering::AcqRel);
    }

    /// Appends the start of the keys of `generation` to `out`. Both parts are MessagePack
    /// values, each delimiting itself, so no generation's prefix starts another's.
    #[inline]
    pub fn key_prefix(&self, generation: u64, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.prefix);
        codec::write_uint(generation, out);
    }

    /// Appends the start of the keys of the current generation, whichever it is, to `out`:
    /// [`CURRENT_GENERATION`] in its place, for a backend that finds it itself.
    #[inline]
    pub fn key_prefix_current(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.prefix);
        out.push(CURRENT_GENERATION);
    }

    /// The name of the backend counter that holds the generation of the namespace whose
    /// keys start with the MessagePack string `name`.
    pub fn counter_name(name: &str) -> String {
        format!("ns:{name}")
    }
}

/// What stands for the generation in the keys handed to a backend that finds the current
/// generation itself ([`Backend::resolves_generations`]): MessagePack `nil`, which no
/// generation (a MessagePack integer) starts with.
pub const CURRENT_GENERATION: u8 = 0xc0;

/// The namespaces of one cache.
#[derive(Default)]
pub(crate) struct Namespaces {
    map: RwLock<HashMap<Arc<str>, Arc<Namespace>>>,
}

impl Namespaces {
    /// The namespace called `name`, created on first use.
    pub fn get(&self, name: &str) -> Arc<Namespace> {
        if let Some(ns) = self.map.read().get(name) {
            return Arc::clone(ns);
        }
        let mut map = self.map.write();
        let ns = map
            .entry(Arc::from(name))
            .or_insert_with(|| Arc::new(Namespace::new(name)));
        Arc::clone(ns)
    }

    /// Every namespace's counts, and their sum.
    pub fn counts(&self) -> (Counts, BTreeMap<String, Counts>) {
        let mut total = Counts::default();
        let mut each = BTreeMap::new();
        for (name, ns) in self.map.read().iter() {
            let c = ns.counts.snapshot();
            total.add(&c);
            each.insert(name.to_string(), c);
        }
        (total, each)
    }

    /// Sets every count to zero.
    pub fn reset(&self) {
        for ns in self.map.read().values() {
            ns.counts.reset();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MemoryBackend, MemoryLimit};

    #[test]
    fn handles_share_one_namespace_and_its_generation() {
        let backend = MemoryBackend::new(MemoryLimit::Entries(10));
        let namespaces = Namespaces::default();
        let a = namespaces.get("a");
        assert!(Arc::ptr_eq(&a, &namespaces.get("a")));
        assert_eq!(a.generation(&backend, true).unwrap(), 0);
        assert_eq!(namespaces.get("a").advance(&backend).unwrap(), 1);
        assert_eq!(a.generation(&backend, true).unwrap(), 1);
        a.raise(0);
        assert_eq!(a.generation(&backend, true).unwrap(), 1, "never lowered");
        let mut key = Vec::new();
        a.key_prefix(1, &mut key);
        assert_eq!(key, [0xa1, b'a', 1], "MessagePack \"a\", then 1");
        a.counts.hit();
        namespaces.get("b").counts.miss();
        let (total, each) = namespaces.counts();
        assert_eq!((total.hits, total.misses), (1, 1));
        assert_eq!(each["a"].hits, 1);
        namespaces.reset();
        assert_eq!(namespaces.counts().0, Counts::default());
    }
}
