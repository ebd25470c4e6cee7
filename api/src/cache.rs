//! The typed cache: values of any serde type under keys of any serde type, over any backend.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backend::Backend;
use crate::blocking::block_on;
use crate::codec;
use crate::envelope;
use crate::error::{Error, Result};
use crate::fingerprint::type_fingerprint;
use crate::flight::{Flights, Role};
use crate::memory::{MemoryBackend, MemoryLimit};
use crate::stats::{AtomicCounts, CacheStats, StatsRegistry};

/// The namespace of a cache that was not given one.
pub const DEFAULT_NAMESPACE: &str = "default";

/// A typed, thread-safe cache. Cheap to clone: clones share the backend, statistics and
/// in-flight computations.
///
/// ```
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, Debug, PartialEq)]
/// struct UserDetail {
///     name: String,
///     age: u8,
/// }
///
/// # let dir = tempfile::tempdir().unwrap();
/// let cache = logcache::Cache::open(dir.path())?;
/// cache.set("user:jason", &UserDetail { name: "Jason".into(), age: 25 })?;
/// let user: Option<UserDetail> = cache.get("user:jason")?;
/// assert_eq!(user.unwrap().age, 25);
///
/// // Computed once, then read back (also after a restart).
/// let n = cache.get_or_insert_with(&("square", 12), || 12 * 12)?;
/// assert_eq!(n, 144);
/// # Ok::<(), logcache::Error>(())
/// ```
#[derive(Clone)]
pub struct Cache {
    shared: Arc<Shared>,
    namespace: Arc<str>,
    counts: Arc<AtomicCounts>,
}

pub(crate) struct Shared {
    pub(crate) backend: Box<dyn Backend>,
    pub(crate) default_ttl: Option<Duration>,
    pub(crate) strict: bool,
    flights: Flights,
    stats: StatsRegistry,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("backend", &self.shared.backend.name())
            .field("namespace", &self.namespace)
            .field("default_ttl", &self.shared.default_ttl)
            .finish()
    }
}

/// How one value is written: its time to live and its tags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetOptions {
    ttl: Option<Duration>,
    tags: Vec<String>,
}

impl SetOptions {
    /// No TTL (the cache's default applies), no tags.
    pub fn new() -> SetOptions {
        SetOptions::default()
    }

    /// The value reads as absent once `ttl` has passed.
    pub fn ttl(mut self, ttl: Duration) -> SetOptions {
        self.ttl = Some(ttl);
        self
    }

    /// Tags the value; [`Cache::evict_tag`] drops every value with that tag at once.
    pub fn tag(mut self, tag: impl Into<String>) -> SetOptions {
        self.tags.push(tag.into());
        self
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A key as readable text for error messages: the string if it is one, else hex.
fn describe_key(namespace: &str, encoded: &[u8]) -> String {
    match codec::decode::<String>(encoded) {
        Ok(s) => format!("{namespace}/{s:?}"),
        Err(_) => {
            let hex: String = encoded
                .iter()
                .take(32)
                .map(|b| format!("{b:02x}"))
                .collect();
            let more = if encoded.len() > 32 { "…" } else { "" };
            format!("{namespace}/0x{hex}{more}")
        }
    }
}

/// The result of looking a key up.
enum Found<T> {
    Value(T),
    Absent,
}

impl Cache {
    /// A cache over `backend` with default settings.
    pub fn with_backend(backend: impl Backend) -> Cache {
        Cache::from_parts(Box::new(backend), None, false)
    }

    pub(crate) fn from_parts(
        backend: Box<dyn Backend>,
        default_ttl: Option<Duration>,
        strict: bool,
    ) -> Cache {
        let shared = Arc::new(Shared {
            backend,
            default_ttl,
            strict,
            flights: Flights::default(),
            stats: StatsRegistry::default(),
        });
        let namespace: Arc<str> = Arc::from(DEFAULT_NAMESPACE);
        let counts = shared.stats.namespace(&namespace);
        Cache {
            shared,
            namespace,
            counts,
        }
    }

    /// A persistent cache in directory `dir` (created if needed) on logcache's own engine,
    /// with default options. See [`CacheBuilder`](crate::CacheBuilder) for the rest.
    pub fn open(dir: impl AsRef<std::path::Path>) -> Result<Cache> {
        crate::CacheBuilder::new().disk(dir.as_ref()).build()
    }

    /// An in-process cache of at most `capacity` entries.
    pub fn memory(capacity: usize) -> Cache {
        Cache::with_backend(MemoryBackend::new(MemoryLimit::Entries(capacity)))
    }

    /// The same cache seen through namespace `name`: its own keys, statistics and
    /// [`clear`](Cache::clear). Memoized functions use their path as namespace.
    ///
    /// ```
    /// let cache = logcache::Cache::memory(100);
    /// let sessions = cache.namespace("sessions");
    /// sessions.set("s1", &1u8)?;
    /// cache.set("s1", &2u8)?; // another namespace, another key
    /// sessions.clear()?;      // O(1)
    /// assert_eq!(sessions.get::<u8>("s1")?, None);
    /// assert_eq!(cache.get::<u8>("s1")?, Some(2));
    /// # Ok::<(), logcache::Error>(())
    /// ```
    pub fn namespace(&self, name: &str) -> Cache {
        let namespace: Arc<str> = Arc::from(name);
        Cache {
            counts: self.shared.stats.namespace(&namespace),
            shared: Arc::clone(&self.shared),
            namespace,
        }
    }

    /// This handle's namespace.
    pub fn namespace_name(&self) -> &str {
        &self.namespace
    }

    /// Whether backend failures fail `get_or_insert_with` (see
    /// [`CacheBuilder::strict`](crate::CacheBuilder::strict)).
    pub fn is_strict(&self) -> bool {
        self.shared.strict
    }

    /// The backend underneath.
    pub fn backend(&self) -> &dyn Backend {
        &*self.shared.backend
    }

    fn ns_counter(&self) -> String {
        format!("ns:{}", self.namespace)
    }

    /// `len(namespace) | namespace | generation`: the prefix of every key of the namespace's
    /// current generation.
    fn prefix(&self, generation: u64) -> Vec<u8> {
        let ns = self.namespace.as_bytes();
        let mut p = Vec::with_capacity(ns.len() + 12);
        p.extend_from_slice(&(ns.len() as u32).to_le_bytes());
        p.extend_from_slice(ns);
        p.extend_from_slice(&generation.to_le_bytes());
        p
    }

    /// The backend key for `key`, and the user key's encoding (for messages).
    pub(crate) fn storage_key<K: Serialize + ?Sized>(&self, key: &K) -> Result<(Vec<u8>, Vec<u8>)> {
        let encoded = codec::encode_key(key).map_err(|e| Error::Encode {
            what: "key",
            message: e.to_string(),
        })?;
        let generation = self.shared.backend.counter(&self.ns_counter())?;
        let mut full = self.prefix(generation);
        full.extend_from_slice(&encoded);
        Ok((full, encoded))
    }

    fn expires_at(ttl: Option<Duration>) -> u64 {
        ttl.map_or(0, |ttl| {
            now_ms()
                .saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
                .max(1)
        })
    }

    /// Reads and checks the entry at `skey`: absent, expired and tag-evicted entries are
    /// `Absent`; a value of another type is a decode error.
    fn read<T: DeserializeOwned + 'static>(
        &self,
        skey: &[u8],
        user_key: &[u8],
    ) -> Result<Found<T>> {
        let Some(bytes) = self.shared.backend.get(skey)? else {
            return Ok(Found::Absent);
        };
        let decode_error = |message: String| Error::Decode {
            key: describe_key(&self.namespace, user_key),
            type_name: std::any::type_name::<T>(),
            message,
        };
        let env = envelope::decode(&bytes).map_err(|m| decode_error(m.to_string()))?;
        if env.expires_at != 0 && env.expires_at <= now_ms() {
            return Ok(Found::Absent);
        }
        for (tag, generation) in &env.tags {
            let tag = String::from_utf8_lossy(tag);
            if self.shared.backend.counter(&format!("tag:{tag}"))? != *generation {
                return Ok(Found::Absent);
            }
        }
        if env.fingerprint != type_fingerprint::<T>() {
            return Err(decode_error(
                "it was stored as another type (or another shape of this type)".into(),
            ));
        }
        codec::decode(env.payload)
            .map(Found::Value)
            .map_err(|e| decode_error(e.to_string()))
    }

    /// Encodes `value` into the stored bytes; returns them and the bare payload.
    fn encode_entry<T: Serialize + DeserializeOwned + 'static>(
        &self,
        value: &T,
        opts: &SetOptions,
    ) -> Result<(Vec<u8>, Vec<u8>)> {
        let payload = codec::encode_value(value).map_err(|e| Error::Encode {
            what: "value",
            message: e.to_string(),
        })?;
        let mut tags = Vec::with_capacity(opts.tags.len());
        for tag in &opts.tags {
            tags.push((
                tag.as_str(),
                self.shared.backend.counter(&format!("tag:{tag}"))?,
            ));
        }
        let ttl = opts.ttl.or(self.shared.default_ttl);
        let bytes = envelope::encode(
            type_fingerprint::<T>(),
            Self::expires_at(ttl),
            &tags,
            &payload,
        )
        .map_err(|message| Error::Encode {
            what: "value",
            message,
        })?;
        Ok((bytes, payload))
    }

    fn write_entry(&self, skey: &[u8], bytes: &[u8], opts: &SetOptions) -> Result<()> {
        self.shared
            .backend
            .set(skey, bytes, opts.ttl.or(self.shared.default_ttl))?;
        self.counts.write();
        Ok(())
    }

    fn counted<R>(&self, result: Result<R>) -> Result<R> {
        if result.is_err() {
            self.counts.error();
        }
        result
    }

    /// The value under `key`, or `None` if there is none (or it expired, or its tag was
    /// evicted, or its namespace cleared). A value stored as another type is
    /// [`Error::Decode`], never a misread value.
    pub fn get<T: DeserializeOwned + 'static>(
        &self,
        key: &(impl Serialize + ?Sized),
    ) -> Result<Option<T>> {
        let result = self
            .storage_key(key)
            .and_then(|(skey, user)| self.read::<T>(&skey, &user));
        match self.counted(result)? {
            Found::Value(v) => {
                self.counts.hit();
                Ok(Some(v))
            }
            Found::Absent => {
                self.counts.miss();
                Ok(None)
            }
        }
    }

    /// Stores `value` under `key` (with the cache's default TTL, if any).
    pub fn set<T: Serialize + DeserializeOwned + 'static>(
        &self,
        key: &(impl Serialize + ?Sized),
        value: &T,
    ) -> Result<()> {
        self.set_with(key, value, &SetOptions::new())
    }

    /// Stores `value` under `key`; it reads as absent once `ttl` has passed.
    pub fn set_with_ttl<T: Serialize + DeserializeOwned + 'static>(
        &self,
        key: &(impl Serialize + ?Sized),
        value: &T,
        ttl: Duration,
    ) -> Result<()> {
        self.set_with(key, value, &SetOptions::new().ttl(ttl))
    }

    /// Stores `value` under `key` with a TTL and tags.
    ///
    /// ```
    /// use std::time::Duration;
    /// use logcache::SetOptions;
    /// let cache = logcache::Cache::memory(100);
    /// let opts = SetOptions::new().ttl(Duration::from_secs(60)).tag("user:7");
    /// cache.set_with("profile:7", &"Ann".to_string(), &opts)?;
    /// cache.set_with("orders:7", &vec![1u32, 2], &opts)?;
    /// cache.evict_tag("user:7")?; // both gone at once
    /// assert_eq!(cache.get::<String>("profile:7")?, None);
    /// # Ok::<(), logcache::Error>(())
    /// ```
    pub fn set_with<T: Serialize + DeserializeOwned + 'static>(
        &self,
        key: &(impl Serialize + ?Sized),
        value: &T,
        opts: &SetOptions,
    ) -> Result<()> {
        let result = self.storage_key(key).and_then(|(skey, _)| {
            let (bytes, _) = self.encode_entry(value, opts)?;
            self.write_entry(&skey, &bytes, opts)
        });
        self.counted(result)
    }

    /// Removes `key`; returns whether a value was stored under it.
    pub fn delete(&self, key: &(impl Serialize + ?Sized)) -> Result<bool> {
        let result = self
            .storage_key(key)
            .and_then(|(skey, _)| self.shared.backend.delete(&skey));
        self.counted(result)
    }

    /// Whether a live value is stored under `key` (of any type).
    pub fn contains(&self, key: &(impl Serialize + ?Sized)) -> Result<bool> {
        let result = self.storage_key(key).and_then(|(skey, user)| {
            match self.read::<serde::de::IgnoredAny>(&skey, &user) {
                Ok(Found::Value(_)) => Ok(true),
                Ok(Found::Absent) => Ok(false),
                // Stored as another type: still a value.
                Err(Error::Decode { .. }) => Ok(true),
                Err(e) => Err(e),
            }
        });
        self.counted(result)
    }

    /// Drops every entry of this namespace at once, in O(1): the namespace moves to a new
    /// generation, and entries of older generations are never read again. (They stay on
    /// disk until evicted or until [`Cache::vacuum`] removes them.)
    pub fn clear(&self) -> Result<()> {
        let result = self
            .shared
            .backend
            .increment(&self.ns_counter())
            .map(|_| ());
        self.counted(result)
    }

    /// Removes the entries of this namespace's older generations (left behind by
    /// [`Cache::clear`]) from the backend. Takes time proportional to the number of keys.
    pub fn vacuum(&self) -> Result<u64> {
        let result = self
            .shared
            .backend
            .counter(&self.ns_counter())
            .and_then(|current| {
                let mut removed = 0;
                for generation in 0..current {
                    removed += self
                        .shared
                        .backend
                        .delete_prefix(&self.prefix(generation))?;
                }
                Ok(removed)
            });
        self.counted(result)
    }

    /// Drops every entry tagged `tag`, in every namespace, at once (O(1), like
    /// `diskcache`'s `evict(tag)`).
    pub fn evict_tag(&self, tag: &str) -> Result<()> {
        let result = self
            .shared
            .backend
            .increment(&format!("tag:{tag}"))
            .map(|_| ());
        self.counted(result)
    }

    /// Statistics of every namespace of this cache.
    pub fn stats(&self) -> CacheStats {
        self.shared.stats.snapshot(self.shared.backend.evictions())
    }

    /// Sets every statistic to zero.
    pub fn reset_stats(&self) {
        self.shared.stats.reset();
    }

    /// Makes writes so far as durable as the backend can.
    pub fn flush(&self) -> Result<()> {
        self.counted(self.shared.backend.flush())
    }

    /// Reads for `get_or_insert_with`: a stale or undecodable value is a miss to recompute;
    /// a backend failure is counted and, unless the cache is strict, also a miss.
    fn read_for_compute<T: DeserializeOwned + 'static>(
        &self,
        skey: &[u8],
        user: &[u8],
        strict: bool,
    ) -> Result<Option<T>> {
        match self.read::<T>(skey, user) {
            Ok(Found::Value(v)) => Ok(Some(v)),
            Ok(Found::Absent) => Ok(None),
            Err(e) => {
                self.counts.error();
                if strict && !matches!(e, Error::Decode { .. }) {
                    Err(e)
                } else {
                    Ok(None)
                }
            }
        }
    }

    /// Stores a computed value; failures are counted and, unless strict, ignored (the caller
    /// has its value either way). Returns the payload for waiting callers.
    fn store_computed<T: Serialize + DeserializeOwned + 'static>(
        &self,
        skey: &[u8],
        value: &T,
        opts: &SetOptions,
        strict: bool,
    ) -> Result<Option<Arc<[u8]>>> {
        let stored = self.encode_entry(value, opts).and_then(|(bytes, payload)| {
            self.write_entry(skey, &bytes, opts)?;
            Ok(payload)
        });
        match stored {
            Ok(payload) => Ok(Some(Arc::from(payload))),
            Err(e) => {
                self.counts.error();
                if strict { Err(e) } else { Ok(None) }
            }
        }
    }

    fn decode_shared<T: DeserializeOwned + 'static>(
        &self,
        payload: &[u8],
        user: &[u8],
    ) -> Result<T> {
        codec::decode(payload).map_err(|e| Error::Decode {
            key: describe_key(&self.namespace, user),
            type_name: std::any::type_name::<T>(),
            message: e.to_string(),
        })
    }

    /// The value under `key`, or `f()` stored under it if there is none. When many threads
    /// miss on the same key at once, `f` runs once and all of them get its result. A stored
    /// value that no longer decodes as `T` is recomputed and overwritten.
    ///
    /// ```
    /// let cache = logcache::Cache::memory(100);
    /// let slow_square = |n: u64| n * n; // imagine seconds of work
    /// assert_eq!(cache.get_or_insert_with(&("square", 12), || slow_square(12))?, 144);
    /// assert_eq!(cache.get_or_insert_with(&("square", 12), || -> u64 { unreachable!() })?, 144);
    /// # Ok::<(), logcache::Error>(())
    /// ```
    pub fn get_or_insert_with<T, F>(&self, key: &(impl Serialize + ?Sized), f: F) -> Result<T>
    where
        T: Serialize + DeserializeOwned + 'static,
        F: FnOnce() -> T,
    {
        self.try_get_or_insert_with(key, || Ok::<T, Error>(f()))
    }

    /// Like [`get_or_insert_with`](Cache::get_or_insert_with) with options for the stored
    /// value.
    pub fn get_or_insert_with_options<T, F>(
        &self,
        key: &(impl Serialize + ?Sized),
        opts: &SetOptions,
        f: F,
    ) -> Result<T>
    where
        T: Serialize + DeserializeOwned + 'static,
        F: FnOnce() -> T,
    {
        self.try_compute(key, opts, self.shared.strict, || Ok::<T, Error>(f()))
    }

    /// The value under `key`, or the `Ok` of `f()` stored under it. An `Err` is returned
    /// and not cached: the next call runs `f` again. Cache errors convert into `E`.
    ///
    /// ```
    /// let cache = logcache::Cache::memory(100);
    /// let down: Result<u32, logcache::Error> = cache.try_get_or_insert_with("k", || {
    ///     Err(logcache::Error::Backend { backend: "api", message: "503".into() })
    /// });
    /// assert!(down.is_err());
    /// assert_eq!(cache.try_get_or_insert_with("k", || Ok::<_, logcache::Error>(7u32))?, 7);
    /// # Ok::<(), logcache::Error>(())
    /// ```
    pub fn try_get_or_insert_with<T, E, F>(
        &self,
        key: &(impl Serialize + ?Sized),
        f: F,
    ) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned + 'static,
        E: From<Error>,
        F: FnOnce() -> Result<T, E>,
    {
        self.try_compute(key, &SetOptions::new(), self.shared.strict, f)
    }

    /// The synchronous form of [`try_compute_async`](Cache::try_compute_async): the same
    /// code, run on this thread (waiting for another caller's computation parks it).
    pub(crate) fn try_compute<T, E, F>(
        &self,
        key: &(impl Serialize + ?Sized),
        opts: &SetOptions,
        strict: bool,
        f: F,
    ) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned + 'static,
        E: From<Error>,
        F: FnOnce() -> Result<T, E>,
    {
        block_on(self.try_compute_async(key, opts, strict, || std::future::ready(f())))
    }

    /// Async form of [`get_or_insert_with`](Cache::get_or_insert_with): waiting for another
    /// task's computation does not block the thread. Backend I/O itself is synchronous.
    pub async fn get_or_insert_with_async<T, F, Fut>(
        &self,
        key: &(impl Serialize + ?Sized),
        f: F,
    ) -> Result<T>
    where
        T: Serialize + DeserializeOwned + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        let strict = self.shared.strict;
        self.try_compute_async(key, &SetOptions::new(), strict, || async {
            Ok::<T, Error>(f().await)
        })
        .await
    }

    /// Async form of [`try_get_or_insert_with`](Cache::try_get_or_insert_with).
    pub async fn try_get_or_insert_with_async<T, E, F, Fut>(
        &self,
        key: &(impl Serialize + ?Sized),
        f: F,
    ) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned + 'static,
        E: From<Error>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.try_compute_async(key, &SetOptions::new(), self.shared.strict, f)
            .await
    }

    /// The engine of the `get_or_insert_with` family: read; on a miss lead the key's flight
    /// and compute, or wait for the leader. With `strict`, backend failures are returned;
    /// otherwise they are counted and the value is computed (and returned) anyway.
    pub(crate) async fn try_compute_async<T, E, F, Fut>(
        &self,
        key: &(impl Serialize + ?Sized),
        opts: &SetOptions,
        strict: bool,
        f: F,
    ) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned + 'static,
        E: From<Error>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let (skey, user) = match self.counted(self.storage_key(key)) {
            Ok(k) => k,
            Err(e) if strict => return Err(e.into()),
            // The backend cannot even tell the key's generation: compute without the cache.
            Err(_) => {
                self.counts.miss();
                return f().await;
            }
        };
        let mut f = Some(f);
        loop {
            if let Some(v) = self.read_for_compute::<T>(&skey, &user, strict)? {
                self.counts.hit();
                return Ok(v);
            }
            let flight = match self.shared.flights.join(&skey) {
                Role::Leader(leader) => {
                    if let Some(v) = self.read_for_compute::<T>(&skey, &user, strict)? {
                        self.counts.hit();
                        return Ok(v);
                    }
                    self.counts.miss();
                    let compute = f.take().expect("a caller leads at most once");
                    let value = compute().await?;
                    if let Some(payload) = self.store_computed(&skey, &value, opts, strict)? {
                        leader.finish(payload);
                    }
                    return Ok(value);
                }
                Role::Follower(flight) => flight,
            };
            if let Some(payload) = flight.wait_async().await {
                self.counts.hit();
                return Ok(self.decode_shared(&payload, &user)?);
            }
        }
    }
}
