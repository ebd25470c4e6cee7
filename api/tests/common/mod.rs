//! The backends the shared suite runs on, and types to store.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use logcache::engine::Options;
use logcache::{Cache, CacheBuilder, MemoryLimit};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct UserDetail {
    pub name: String,
    pub age: u8,
}

/// The same type after a field was added.
pub mod v2 {
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
    pub struct UserDetail {
        pub name: String,
        pub age: u8,
        pub email: Option<String>,
    }
}

/// Which backend a suite run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Memory,
    Disk,
    Tiered,
}

/// Opens caches of one kind; disk and tiered caches reopen the same directory.
pub struct Fixture {
    pub kind: Kind,
    dir: Option<tempfile::TempDir>,
}

impl Fixture {
    pub fn new(kind: Kind) -> Fixture {
        let dir = (kind != Kind::Memory).then(|| tempfile::tempdir().unwrap());
        Fixture { kind, dir }
    }

    pub fn persistent(&self) -> bool {
        self.kind != Kind::Memory
    }

    pub fn path(&self) -> PathBuf {
        self.dir.as_ref().expect("persistent").path().to_path_buf()
    }

    /// A builder for this kind, to which a test can add settings.
    pub fn builder(&self) -> CacheBuilder {
        let engine = Options::default().compaction_interval(Duration::from_millis(20));
        match self.kind {
            Kind::Memory => CacheBuilder::new().memory(MemoryLimit::Entries(100_000)),
            Kind::Disk => CacheBuilder::new().disk(self.path()).engine_options(engine),
            Kind::Tiered => CacheBuilder::new()
                .disk(self.path())
                .engine_options(engine)
                .memory_tier(MemoryLimit::Entries(1000)),
        }
    }

    pub fn open(&self) -> Cache {
        self.builder().build().unwrap()
    }
}

/// Runs `$test(&Fixture)` once per backend, as tests named `$test::memory`, `::disk`, `::tiered`.
#[macro_export]
macro_rules! per_backend {
    ($($test:ident),* $(,)?) => {
        $(
            mod $test {
                use super::*;
                #[test]
                fn memory() {
                    super::$test(&common::Fixture::new(common::Kind::Memory));
                }
                #[test]
                fn disk() {
                    super::$test(&common::Fixture::new(common::Kind::Disk));
                }
                #[test]
                fn tiered() {
                    super::$test(&common::Fixture::new(common::Kind::Tiered));
                }
            }
        )*
    };
}
