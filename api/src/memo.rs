//! Memoization: what `#[memoize]` expands to, usable by hand too.
//!
//! A memoized call is keyed by the function's path (its namespace, so it can be cleared on its
//! own), a version, a hash of the function's body, the fingerprint of the result type's shape,
//! the function's generic instantiation and the canonically encoded arguments. Changing the
//! body, the version or the result type therefore makes old entries unreachable instead of
//! returning stale or misread values, and `f::<u32>` never returns what `f::<bool>` computed.

use std::any::TypeId;
use std::convert::Infallible;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::{Arc, LazyLock, OnceLock, Weak};
use std::time::Duration;

use serde::Serialize;

use crate::blocking::block_on;
use crate::cache::{self, Cache, MissedKey, OnFailure, SetOptions, Shared, Value};
use crate::codec;
use crate::error::Error;
use crate::fingerprint::{stable_hash, type_fingerprint};
use crate::flight::Caller;
use crate::memory::MemoryLimit;
use crate::namespace::Namespace;

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
    /// Whether a call that misses takes the key's lease, so that callers in other processes
    /// or machines wait for its result instead of computing it too (default `true`).
    pub lease: bool,
}

impl MemoSpec {
    /// A spec for `function` with version 0, no body hash and no TTL.
    pub const fn new(function: &'static str) -> MemoSpec {
        MemoSpec {
            function,
            version: 0,
            body_hash: 0,
            ttl: None,
            lease: true,
        }
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

/// A hash of a generic function's instantiation: the names of its type arguments (and of the
/// types of its `impl Trait` arguments, and its const arguments), so that each instantiation
/// is memoized apart. 0 for no names.
pub fn instance(names: &[&str]) -> u64 {
    if names.is_empty() {
        return 0;
    }
    stable_hash(names.join("\0").as_bytes())
}

/// The arguments of a memoized call, each one part of its key: a tuple of references to
/// them (what `#[memoize]` passes), or [`Key`] around any one value.
pub trait Args {
    /// How many parts.
    fn count(&self) -> usize;
    /// Appends the canonical encoding of each part.
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), codec::CodecError>;
}

/// One value as the whole of a memoized call's arguments (`#[memoize(key = ...)]`, and the
/// functions of this module).
pub struct Key<'a, K: ?Sized>(pub &'a K);

impl<K: Serialize + ?Sized> Args for Key<'_, K> {
    fn count(&self) -> usize {
        1
    }

    fn encode(&self, out: &mut Vec<u8>) -> Result<(), codec::CodecError> {
        codec::encode_key_into(self.0, out)
    }
}

macro_rules! tuple_args {
    ($count:expr; $($part:ident $index:tt),*) => {
        impl<$($part: Serialize + ?Sized),*> Args for ($(&$part,)*) {
            fn count(&self) -> usize {
                $count
            }

            #[allow(unused_variables)]
            fn encode(&self, out: &mut Vec<u8>) -> Result<(), codec::CodecError> {
                $(codec::encode_key_into(self.$index, out)?;)*
                Ok(())
            }
        }
    };
}

tuple_args!(0;);
tuple_args!(1; A 0);
tuple_args!(2; A 0, B 1);
tuple_args!(3; A 0, B 1, C 2);
tuple_args!(4; A 0, B 1, C 2, D 3);
tuple_args!(5; A 0, B 1, C 2, D 3, E 4);
tuple_args!(6; A 0, B 1, C 2, D 3, E 4, F 5);
tuple_args!(7; A 0, B 1, C 2, D 3, E 4, F 5, G 6);
tuple_args!(8; A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7);
tuple_args!(9; A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8);
tuple_args!(10; A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9);
tuple_args!(11; A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10);
tuple_args!(12; A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10, L 11);

/// One memoized function: `#[memoize]` makes one of these a `static` per function. It keeps a
/// handle on the function's namespace in the last cache it was used with, so a call that hits
/// does no lookup by name and allocates nothing.
pub struct Memo {
    function: &'static str,
    version: u32,
    body_hash: u64,
    /// Whether a call that misses takes the key's lease (`lease`), so that callers in other
    /// processes wait for its result.
    lease: bool,
    /// The namespace in the first cache used (a weak pointer to that cache, so the static
    /// neither keeps the cache open nor mistakes another cache at the same address for it).
    namespace: OnceLock<(Weak<Shared>, Arc<Namespace>)>,
    /// For the first result type (a generic function may have others), the encoded version,
    /// body hash and result type fingerprint that start every key.
    header: OnceLock<(TypeId, Header)>,
}

/// Version, body hash and fingerprint, encoded (three MessagePack integers, at most 23 bytes).
struct Header {
    bytes: [u8; 23],
    len: u8,
}

impl Header {
    fn new(version: u32, body_hash: u64, fingerprint: u64) -> Header {
        let mut encoded = Vec::with_capacity(23);
        for part in [u64::from(version), body_hash, fingerprint] {
            codec::write_uint(part, &mut encoded);
        }
        let mut bytes = [0; 23];
        bytes[..encoded.len()].copy_from_slice(&encoded);
        Header {
            bytes,
            len: encoded.len() as u8,
        }
    }

    fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// A namespace, kept in a `Memo` or looked up.
enum NamespaceRef<'a> {
    Kept(&'a Arc<Namespace>),
    Found(Arc<Namespace>),
}

impl NamespaceRef<'_> {
    fn get(&self) -> &Arc<Namespace> {
        match self {
            NamespaceRef::Kept(ns) => ns,
            NamespaceRef::Found(ns) => ns,
        }
    }
}

/// What [`Memo::lookup`] found.
pub enum Lookup<T> {
    /// The stored result.
    Hit(T),
    /// Compute it with one of [`Miss`]'s methods.
    Miss(Miss<T>),
}

/// A memoized call that missed: computing its result also stores it (once for all callers
/// that miss on it at the same time).
pub struct Miss<T> {
    shared: Arc<Shared>,
    ns: Arc<Namespace>,
    missed: MissedKey,
    opts: SetOptions,
    on_failure: OnFailure,
    value: PhantomData<fn() -> T>,
}

/// Why a memoized computation did not produce a value: the function's own error, or (only
/// in strict mode) the cache's.
enum MemoError<E> {
    Function(E),
    Cache(Error),
}

impl<E> From<Error> for MemoError<E> {
    fn from(e: Error) -> Self {
        MemoError::Cache(e)
    }
}

impl Memo {
    /// A memoized function at path `function` (also its namespace), with a version and a
    /// hash of its body that are part of every key.
    pub const fn new(function: &'static str, version: u32, body_hash: u64) -> Memo {
        Memo {
            function,
            version,
            body_hash,
            lease: true,
            namespace: OnceLock::new(),
            header: OnceLock::new(),
        }
    }

    /// Calls that miss compute without taking the key's lease: callers in other processes
    /// or machines that miss at the same time compute too (`#[memoize(no_lease)]`).
    pub const fn without_lease(mut self) -> Memo {
        self.lease = false;
        self
    }

    /// Writes the key of a call: `[version, body hash, fingerprint, instance, args...]`.
    #[inline]
    fn write_key<T: Value>(
        &self,
        instance: u64,
        args: &impl Args,
        out: &mut Vec<u8>,
    ) -> Result<(), codec::CodecError> {
        codec::write_array_header(4 + args.count(), out)?;
        let (id, header) = self.header.get_or_init(|| {
            (
                TypeId::of::<T>(),
                Header::new(self.version, self.body_hash, type_fingerprint::<T>()),
            )
        });
        if *id == TypeId::of::<T>() {
            out.extend_from_slice(header.as_slice());
        } else {
            let header = Header::new(self.version, self.body_hash, type_fingerprint::<T>());
            out.extend_from_slice(header.as_slice());
        }
        codec::write_uint(instance, out);
        args.encode(out)
    }

    /// The function's namespace in the cache of `shared`: the one kept, or (another cache)
    /// looked up by name.
    #[inline]
    fn namespace(&self, shared: &Arc<Shared>) -> NamespaceRef<'_> {
        let kept = self
            .namespace
            .get_or_init(|| (Arc::downgrade(shared), shared.namespaces_get(self.function)));
        if Weak::as_ptr(&kept.0) == Arc::as_ptr(shared) {
            NamespaceRef::Kept(&kept.1)
        } else {
            NamespaceRef::Found(shared.namespaces_get(self.function))
        }
    }

    /// Looks up the result of this function for `args` (in `instance`, see [`instance`]).
    /// Cache failures are counted in the statistics and make a miss that computes without
    /// storing.
    pub fn lookup<T: Value>(
        &self,
        cache: &Cache,
        ttl: Option<Duration>,
        instance: u64,
        args: impl Args,
    ) -> Lookup<T> {
        match self.find(cache, ttl, instance, args, OnFailure::Compute) {
            Ok(found) => found,
            Err(e) => unreachable!("a lenient lookup returned {e}"),
        }
    }

    /// [`lookup`](Memo::lookup) in strict mode: a cache failure is an error (the function is
    /// not run), and so is a failure to store its result.
    pub fn lookup_strict<T: Value>(
        &self,
        cache: &Cache,
        ttl: Option<Duration>,
        instance: u64,
        args: impl Args,
    ) -> Result<Lookup<T>, Error> {
        self.find(cache, ttl, instance, args, OnFailure::Fail)
    }

    #[inline]
    fn find<T: Value>(
        &self,
        cache: &Cache,
        ttl: Option<Duration>,
        instance: u64,
        args: impl Args,
        on_failure: OnFailure,
    ) -> Result<Lookup<T>, Error> {
        let shared = cache.shared();
        let ns = self.namespace(shared);
        let key = |out: &mut Vec<u8>| self.write_key::<T>(instance, &args, out);
        if let Some(v) = shared.kept_hit::<T>(ns.get(), key) {
            return Ok(Lookup::Hit(v));
        }
        let found = shared.lookup::<T>(ns.get(), key, on_failure, self.lease)?;
        Ok(self.found(shared, ns.get(), found, ttl, on_failure))
    }

    /// [`lookup`](Memo::lookup) for async functions: through the backend's async methods
    /// where it has them (Redis with the `tokio` feature).
    pub async fn lookup_async<T: Value>(
        &self,
        cache: &Cache,
        ttl: Option<Duration>,
        instance: u64,
        args: impl Args,
    ) -> Lookup<T> {
        match self
            .find_async(cache, ttl, instance, args, OnFailure::Compute)
            .await
        {
            Ok(found) => found,
            Err(e) => unreachable!("a lenient lookup returned {e}"),
        }
    }

    /// [`lookup_strict`](Memo::lookup_strict) for async functions.
    pub async fn lookup_strict_async<T: Value>(
        &self,
        cache: &Cache,
        ttl: Option<Duration>,
        instance: u64,
        args: impl Args,
    ) -> Result<Lookup<T>, Error> {
        self.find_async(cache, ttl, instance, args, OnFailure::Fail)
            .await
    }

    async fn find_async<T: Value>(
        &self,
        cache: &Cache,
        ttl: Option<Duration>,
        instance: u64,
        args: impl Args,
        on_failure: OnFailure,
    ) -> Result<Lookup<T>, Error> {
        let shared = cache.shared();
        let ns = self.namespace(shared);
        let key = |out: &mut Vec<u8>| self.write_key::<T>(instance, &args, out);
        if let Some(v) = shared.kept_hit::<T>(ns.get(), key) {
            return Ok(Lookup::Hit(v));
        }
        let found = shared
            .lookup_async::<T>(ns.get(), key, on_failure, self.lease)
            .await?;
        Ok(self.found(shared, ns.get(), found, ttl, on_failure))
    }

    /// A lookup's result as the caller sees it.
    fn found<T: Value>(
        &self,
        shared: &Arc<Shared>,
        ns: &Arc<Namespace>,
        found: cache::Lookup<T>,
        ttl: Option<Duration>,
        on_failure: OnFailure,
    ) -> Lookup<T> {
        match found {
            cache::Lookup::Hit(v) => Lookup::Hit(v),
            cache::Lookup::Miss(missed) => Lookup::Miss(Miss {
                shared: Arc::clone(shared),
                ns: Arc::clone(ns),
                missed,
                opts: ttl.map_or_else(SetOptions::new, |ttl| SetOptions::new().ttl(ttl)),
                on_failure,
                value: PhantomData,
            }),
        }
    }
}

impl<T: Value> Miss<T> {
    async fn run<E, F, Fut>(self, caller: Caller, f: F) -> Result<T, MemoError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.shared
            .compute(
                &self.ns,
                self.missed,
                &self.opts,
                self.on_failure,
                caller,
                || {
                    let fut = f();
                    async move { fut.await.map_err(MemoError::Function) }
                },
            )
            .await
    }

    /// Runs `f` and stores its result.
    pub fn compute(self, f: impl FnOnce() -> T) -> T {
        match self.try_compute(|| Ok::<T, Infallible>(f())) {
            Ok(v) => v,
            Err(never) => match never {},
        }
    }

    /// Runs `f` and stores its result if it is `Ok`; an `Err` is returned and not stored.
    pub fn try_compute<E>(self, f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        let on_failure = self.on_failure;
        match block_on(self.run(Caller::blocking(), || std::future::ready(f()))) {
            Ok(v) => Ok(v),
            Err(MemoError::Function(e)) => Err(e),
            Err(MemoError::Cache(e)) => unreachable!("{on_failure:?} returned a cache error: {e}"),
        }
    }

    /// [`try_compute`](Miss::try_compute) in strict mode: a failure to store is returned too.
    pub fn try_compute_strict<E: From<Error>>(
        self,
        f: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        match block_on(self.run(Caller::blocking(), || std::future::ready(f()))) {
            Ok(v) => Ok(v),
            Err(MemoError::Function(e)) => Err(e),
            Err(MemoError::Cache(e)) => Err(e.into()),
        }
    }

    /// Async form of [`compute`](Miss::compute).
    pub async fn compute_async<Fut: Future<Output = T>>(self, f: impl FnOnce() -> Fut) -> T {
        let result = self
            .try_compute_async(|| async { Ok::<T, Infallible>(f().await) })
            .await;
        match result {
            Ok(v) => v,
            Err(never) => match never {},
        }
    }

    /// Async form of [`try_compute`](Miss::try_compute).
    pub async fn try_compute_async<E, Fut: Future<Output = Result<T, E>>>(
        self,
        f: impl FnOnce() -> Fut,
    ) -> Result<T, E> {
        let on_failure = self.on_failure;
        match self.run(Caller::Async, f).await {
            Ok(v) => Ok(v),
            Err(MemoError::Function(e)) => Err(e),
            Err(MemoError::Cache(e)) => unreachable!("{on_failure:?} returned a cache error: {e}"),
        }
    }

    /// Async form of [`try_compute_strict`](Miss::try_compute_strict).
    pub async fn try_compute_strict_async<E: From<Error>, Fut: Future<Output = Result<T, E>>>(
        self,
        f: impl FnOnce() -> Fut,
    ) -> Result<T, E> {
        match self.run(Caller::Async, f).await {
            Ok(v) => Ok(v),
            Err(MemoError::Function(e)) => Err(e),
            Err(MemoError::Cache(e)) => Err(e.into()),
        }
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
/// let lookup = |id: u32| memo::memoize(&cache, &spec, &(id,), || id * 10);
/// assert_eq!(lookup(4), 40);
/// assert_eq!(lookup(4), 40); // from the cache
/// assert_eq!(cache.stats().total.hits, 1);
/// ```
pub fn memoize<T, A, F>(cache: &Cache, spec: &MemoSpec, args: &A, f: F) -> T
where
    T: Value,
    A: Serialize + ?Sized,
    F: FnOnce() -> T,
{
    match by_hand(spec).lookup(cache, spec.ttl, 0, Key(args)) {
        Lookup::Hit(v) => v,
        Lookup::Miss(m) => m.compute(f),
    }
}

/// [`memoize`] for functions returning `Result`: only `Ok` is cached; an `Err` is returned
/// and the next call runs `f` again.
pub fn try_memoize<T, E, A, F>(cache: &Cache, spec: &MemoSpec, args: &A, f: F) -> Result<T, E>
where
    T: Value,
    A: Serialize + ?Sized,
    F: FnOnce() -> Result<T, E>,
{
    match by_hand(spec).lookup(cache, spec.ttl, 0, Key(args)) {
        Lookup::Hit(v) => Ok(v),
        Lookup::Miss(m) => m.try_compute(f),
    }
}

/// [`try_memoize`] in strict mode: cache failures are returned as the function's error.
pub fn try_memoize_strict<T, E, A, F>(
    cache: &Cache,
    spec: &MemoSpec,
    args: &A,
    f: F,
) -> Result<T, E>
where
    T: Value,
    E: From<Error>,
    A: Serialize + ?Sized,
    F: FnOnce() -> Result<T, E>,
{
    match by_hand(spec).lookup_strict(cache, spec.ttl, 0, Key(args))? {
        Lookup::Hit(v) => Ok(v),
        Lookup::Miss(m) => m.try_compute_strict(f),
    }
}

/// Async form of [`memoize`].
pub async fn memoize_async<T, A, F, Fut>(cache: &Cache, spec: &MemoSpec, args: &A, f: F) -> T
where
    T: Value,
    A: Serialize + ?Sized,
    F: FnOnce() -> Fut,
    Fut: Future<Output = T>,
{
    match by_hand(spec)
        .lookup_async(cache, spec.ttl, 0, Key(args))
        .await
    {
        Lookup::Hit(v) => v,
        Lookup::Miss(m) => m.compute_async(f).await,
    }
}

/// A `Memo` for one call by hand (no static to keep a namespace handle in).
fn by_hand(spec: &MemoSpec) -> Memo {
    let memo = Memo::new(spec.function, spec.version, spec.body_hash);
    if spec.lease {
        memo
    } else {
        memo.without_lease()
    }
}
