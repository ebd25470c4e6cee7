//! Memoization: what `#[memoize]` expands to, usable by hand too.
//!
//! A memoized call is keyed by the function's path (its namespace, so it can be cleared on its
//! own), a version, a hash of the function's body, the fingerprint of the result type's shape
//! and the encoded arguments. Changing the body, the version or the result type therefore
//! makes old entries unreachable instead of returning stale or misread values.

use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::blocking::block_on;
use crate::cache::{Cache, SetOptions};
use crate::codec;
use crate::error::Error;
use crate::fingerprint::type_fingerprint;
use crate::memory::MemoryLimit;

/// What the memoization of one function is keyed and stored by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoSpec {
    /// The function's path; also its namespace.
    pub function: &'static str,
    /// Bumped by hand to invalidate old results.
    pub version: u32,
    /// A hash of the function's body (0 when body hashing is off).
    pub body_hash: u64,
    /// How long results live (`None`: the cache's default).
    pub ttl: Option<Duration>,
}

impl MemoSpec {
    /// A spec for `function` with version 0, no body hash and no TTL.
    pub const fn new(function: &'static str) -> MemoSpec {
        MemoSpec {
            function,
            version: 0,
            body_hash: 0,
            ttl: None,
        }
    }

    fn options(&self) -> SetOptions {
        self.ttl
            .map_or_else(SetOptions::new, |ttl| SetOptions::new().ttl(ttl))
    }
}

/// Anything that can stand for a cache in `#[memoize(cache = ...)]`.
pub trait AsCache {
    /// The cache.
    fn as_cache(&self) -> &Cache;
}

impl AsCache for Cache {
    fn as_cache(&self) -> &Cache {
        self
    }
}

impl<T: AsCache + ?Sized> AsCache for &T {
    fn as_cache(&self) -> &Cache {
        (**self).as_cache()
    }
}

impl<T: AsCache + ?Sized> AsCache for Arc<T> {
    fn as_cache(&self) -> &Cache {
        (**self).as_cache()
    }
}

impl<T: AsCache, F: FnOnce() -> T> AsCache for LazyLock<T, F> {
    fn as_cache(&self) -> &Cache {
        (**self).as_cache()
    }
}

/// The cache `#[memoize]` uses when none is named: a disk cache in `$LOGCACHE_DIR`, or
/// `./.logcache`. If that directory cannot be opened (another process holds it, say), a
/// warning is printed and an in-memory cache of 10,000 entries is used instead.
pub fn default_cache() -> &'static Cache {
    static DEFAULT: LazyLock<Cache> = LazyLock::new(|| {
        let dir = std::env::var_os("LOGCACHE_DIR").unwrap_or_else(|| ".logcache".into());
        Cache::open(&dir).unwrap_or_else(|e| {
            eprintln!(
                "logcache: cannot open {} ({e}); memoizing in memory instead",
                std::path::Path::new(&dir).display()
            );
            crate::CacheBuilder::new()
                .memory(MemoryLimit::Entries(10_000))
                .build()
                .expect("a memory cache always builds")
        })
    });
    &DEFAULT
}

/// Encodes a function's arguments for its key. `None` if they cannot be encoded (then the
/// call is not cached).
pub fn encode_args<A: Serialize + ?Sized>(args: &A) -> Option<Vec<u8>> {
    codec::encode_key(args).ok()
}

fn key<'a, T: DeserializeOwned + 'static>(
    spec: &MemoSpec,
    args: &'a [u8],
) -> (u32, u64, u64, &'a [u8]) {
    (spec.version, spec.body_hash, type_fingerprint::<T>(), args)
}

/// Why a memoized computation did not produce a value: the function's own error, or (only
/// before it ran, or in strict mode) the cache's.
enum MemoError<E> {
    Function(E),
    /// Already counted in the statistics.
    Cache,
}

impl<E> From<Error> for MemoError<E> {
    fn from(_: Error) -> Self {
        MemoError::Cache
    }
}

/// Returns the cached result of `f` for these arguments, or runs it and caches the result.
/// Cache failures never fail the call: they are counted in the statistics and `f` runs.
///
/// The function form of `#[memoize]`, for methods and closures:
///
/// ```
/// use logcache::memo::{self, MemoSpec};
/// let cache = logcache::Cache::memory(100);
/// let spec = MemoSpec::new("my_app::Client::lookup");
/// let lookup = |id: u32| memo::memoize(&cache, &spec, memo::encode_args(&(id,)), || id * 10);
/// assert_eq!(lookup(4), 40);
/// assert_eq!(lookup(4), 40); // from the cache
/// assert_eq!(cache.stats().total.hits, 1);
/// ```
pub fn memoize<T, F>(cache: &Cache, spec: &MemoSpec, args: Option<Vec<u8>>, f: F) -> T
where
    T: Serialize + DeserializeOwned + 'static,
    F: FnOnce() -> T,
{
    block_on(memoize_async(cache, spec, args, || std::future::ready(f())))
}

/// [`memoize`] for functions returning `Result`: only `Ok` is cached; an `Err` is returned
/// and the next call runs `f` again.
pub fn try_memoize<T, E, F>(
    cache: &Cache,
    spec: &MemoSpec,
    args: Option<Vec<u8>>,
    f: F,
) -> Result<T, E>
where
    T: Serialize + DeserializeOwned + 'static,
    F: FnOnce() -> Result<T, E>,
{
    block_on(try_memoize_async(cache, spec, args, || {
        std::future::ready(f())
    }))
}

/// [`try_memoize`] in strict mode: cache failures are returned as the function's error.
pub fn try_memoize_strict<T, E, F>(
    cache: &Cache,
    spec: &MemoSpec,
    args: Option<Vec<u8>>,
    f: F,
) -> Result<T, E>
where
    T: Serialize + DeserializeOwned + 'static,
    E: From<Error>,
    F: FnOnce() -> Result<T, E>,
{
    block_on(try_memoize_strict_async(cache, spec, args, || {
        std::future::ready(f())
    }))
}

/// Async form of [`memoize`].
pub async fn memoize_async<T, F, Fut>(
    cache: &Cache,
    spec: &MemoSpec,
    args: Option<Vec<u8>>,
    f: F,
) -> T
where
    T: Serialize + DeserializeOwned + 'static,
    F: FnOnce() -> Fut,
    Fut: Future<Output = T>,
{
    let never_fails = try_memoize_async(cache, spec, args, || async {
        Ok::<T, Infallible>(f().await)
    });
    match never_fails.await {
        Ok(v) => v,
        Err(never) => match never {},
    }
}

/// Async form of [`try_memoize`].
pub async fn try_memoize_async<T, E, F, Fut>(
    cache: &Cache,
    spec: &MemoSpec,
    args: Option<Vec<u8>>,
    f: F,
) -> Result<T, E>
where
    T: Serialize + DeserializeOwned + 'static,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let ns = cache.namespace(spec.function);
    let Some(args) = args else {
        return f().await;
    };
    let mut f = Some(f);
    let result = ns
        .try_compute_async(&key::<T>(spec, &args), &spec.options(), false, || {
            let fut = (f.take().expect("runs once"))();
            async move { fut.await.map_err(MemoError::Function) }
        })
        .await;
    match result {
        Ok(v) => Ok(v),
        Err(MemoError::Function(e)) => Err(e),
        Err(MemoError::Cache) => (f.take().expect("not run yet"))().await,
    }
}

/// Async form of [`try_memoize_strict`].
pub async fn try_memoize_strict_async<T, E, F, Fut>(
    cache: &Cache,
    spec: &MemoSpec,
    args: Option<Vec<u8>>,
    f: F,
) -> Result<T, E>
where
    T: Serialize + DeserializeOwned + 'static,
    E: From<Error>,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let ns = cache.namespace(spec.function);
    let args = args.ok_or_else(|| Error::Encode {
        what: "key",
        message: "the arguments of a memoized call could not be encoded".into(),
    })?;
    ns.try_compute_async(&key::<T>(spec, &args), &spec.options(), true, f)
        .await
}
