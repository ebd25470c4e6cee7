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
    #[cfg(feature = "redis")]
    Redis,
    #[cfg(feature = "redis")]
    RedisCluster,
}

/// The Redis server the tests use: `LOGCACHE_REDIS_URL`. Without it the Redis tests say so
/// loudly and skip, except under CI (`CI=true`), where they fail.
#[cfg(feature = "redis")]
pub fn redis_url() -> Option<String> {
    match std::env::var("LOGCACHE_REDIS_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            let why = "LOGCACHE_REDIS_URL is not set: the Redis backend is NOT tested";
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{why} (CI=true)"
            );
            // Straight to stderr, past the test harness's capture, so it is seen.
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
            None
        }
    }
}

/// The Redis Cluster the tests use: `LOGCACHE_REDIS_CLUSTER_URLS`, some of its nodes' URLs,
/// comma-separated. Without it the cluster tests say so loudly and skip, except under CI
/// (`CI=true`), where they fail.
#[cfg(feature = "redis")]
pub fn redis_cluster_urls() -> Option<Vec<String>> {
    match std::env::var("LOGCACHE_REDIS_CLUSTER_URLS") {
        Ok(urls) if !urls.is_empty() => Some(urls.split(',').map(str::to_string).collect()),
        _ => {
            let why = "LOGCACHE_REDIS_CLUSTER_URLS is not set: Redis Cluster is NOT tested";
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{why} (CI=true)"
            );
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
            None
        }
    }
}

/// Opens caches of one kind; disk and tiered caches reopen the same directory.
pub struct Fixture {
    pub kind: Kind,
    dir: Option<tempfile::TempDir>,
    /// A key prefix of its own on the shared Redis server.
    #[cfg(feature = "redis")]
    prefix: String,
}

impl Fixture {
    pub fn new(kind: Kind) -> Fixture {
        let dir = matches!(kind, Kind::Disk | Kind::Tiered).then(|| tempfile::tempdir().unwrap());
        Fixture {
            kind,
            dir,
            #[cfg(feature = "redis")]
            prefix: format!(
                "logcache-test:{}:{}:",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos()
            ),
        }
    }

    pub fn persistent(&self) -> bool {
        self.kind != Kind::Memory
    }

    /// Whether the backend enforces `CacheBuilder::max_bytes` itself (Redis has its own
    /// `maxmemory`).
    pub fn has_size_limit(&self) -> bool {
        matches!(self.kind, Kind::Memory | Kind::Disk | Kind::Tiered)
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
            #[cfg(feature = "redis")]
            Kind::Redis => {
                let url = redis_url().expect("the caller checked the URL");
                let backend = logcache::RedisBackend::open(&url)
                    .unwrap()
                    .with_prefix(self.prefix.clone());
                CacheBuilder::new().backend(backend)
            }
            #[cfg(feature = "redis")]
            Kind::RedisCluster => {
                let urls = redis_cluster_urls().expect("the caller checked the URLs");
                let backend = logcache::RedisBackend::cluster(&urls)
                    .unwrap()
                    .with_prefix(self.prefix.clone());
                CacheBuilder::new().backend(backend)
            }
        }
    }

    pub fn open(&self) -> Cache {
        self.builder().build().unwrap()
    }
}

/// Runs `$test(&Fixture)` once per backend, as tests named `$test::memory`, `::disk`,
/// `::tiered` and, with the `redis` feature, `::redis`.
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
                #[cfg(feature = "redis")]
                #[test]
                fn redis() {
                    if common::redis_url().is_some() {
                        super::$test(&common::Fixture::new(common::Kind::Redis));
                    }
                }
                #[cfg(feature = "redis")]
                #[test]
                fn redis_cluster() {
                    if common::redis_cluster_urls().is_some() {
                        super::$test(&common::Fixture::new(common::Kind::RedisCluster));
                    }
                }
            }
        )*
    };
}

/// A free loopback port whose cluster bus port (10,000 higher) is free too, so below 55,536.
pub fn free_cluster_port() -> u16 {
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if port < 55_536 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}
