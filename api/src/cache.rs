//! The typed cache: values of any serde type under keys of any serde type, over any backend.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backend::Leased;
use crate::backend::{Backend, Stored};
use crate::blocking::block_on;
use crate::buffers::{with_buffers, with_key_buffer};
use crate::codec;
use crate::envelope::{self, Envelope};
use crate::error::{Error, Result};
use crate::fingerprint::type_fingerprint;
use crate::flight::{Caller, Flights, Role};
use crate::lease::{self, DEFAULT_LEASE, LeaseGuard, LeaseState, Waited};
use crate::memory::{Decoded, MemoryBackend, MemoryLimit};
use crate::namespace::{Namespace, Namespaces};
use crate::stats::CacheStats;

/// The namespace of a cache that was not given one.
pub const DEFAULT_NAMESPACE: &str = "default";

/// What the typed cache stores and returns: any serde type that can be cloned and shared
/// between threads. Implemented for every such type.
///
/// `Clone` because a value read from memory (a memory cache, or a memory tier) is kept
/// decoded, so a hit returns a clone instead of decoding again.
pub trait Value: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {}

impl<T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static> Value for T {}

/// A typed, thread-safe cache. Cheap to clone: clones share the backend, statistics and
/// in-flight computations.
///
/// ```
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
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
    ns: Arc<Namespace>,
}

/// What every handle of one cache shares.
pub(crate) struct Shared {
    backend: Box<dyn Backend>,
    /// `backend.counters_are_private()`, asked once.
    private_counters: bool,
    /// Whether the backend finds namespace generations itself (`Backend::resolves_generations`).
    resolves_generations: bool,
    default_ttl: Option<Duration>,
    on_failure: OnFailure,
    /// How long a caller that computes a missed value holds its lease (`lease`): `None` if the
    /// cache opted out or the backend has no leases others can see.
    lease: Option<Duration>,
    flights: Flights,
    namespaces: Namespaces,
}

/// What the `get_or_insert_with` family does when the backend fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnFailure {
    /// Return the error (strict).
    Fail,
    /// Count it in the statistics and compute the value anyway.
    Compute,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("backend", &self.shared.backend.name())
            .field("namespace", &self.ns.name)
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
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> SetOptions {
        self.ttl = Some(ttl);
        self
    }

    /// Tags the value; [`Cache::evict_tag`] drops every value with that tag at once.
    #[must_use]
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

fn expires_at(ttl: Option<Duration>) -> u64 {
    ttl.map_or(0, |ttl| {
        now_ms()
            .saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
            .max(1)
    })
}

/// A key as readable text for error messages: the namespace and the key as JSON.
fn describe_key(namespace: &str, user_key: &[u8]) -> String {
    match codec::to_json(user_key) {
        Ok(json) => format!("{namespace}/{json}"),
        Err(_) => {
            let hex: String = user_key
                .iter()
                .take(32)
                .map(|b| format!("{b:02x}"))
                .collect();
            let more = if user_key.len() > 32 { "…" } else { "" };
            format!("{namespace}/0x{hex}{more}")
        }
    }
}

/// Writes the canonical encoding of a user key.
fn user_key<K: Serialize + ?Sized>(
    key: &K,
) -> impl FnOnce(&mut Vec<u8>) -> Result<(), codec::CodecError> + '_ {
    move |out| codec::encode_key_into(key, out)
}

fn encode_error(what: &'static str) -> impl FnOnce(codec::CodecError) -> Error {
    move |e| Error::Encode {
        what,
        message: e.to_string(),
    }
}

/// A key that missed in `get_or_insert_with`: what computing its value needs.
pub(crate) struct MissedKey {
    /// The storage key; `None` when the cache cannot be used (the value is computed and not
    /// stored).
    key: Option<Vec<u8>>,
    /// Where the user key starts in `key`.
    user_at: usize,
    /// [`Flights::ended`] before the read that missed.
    flights_ended: u64,
    /// The key's lease, as the read that missed left it.
    lease: LeaseState,
}

/// What looking a key up for `get_or_insert_with` found.
pub(crate) enum Lookup<T> {
    Hit(T),
    Miss(MissedKey),
}

impl Shared {
    /// The namespace called `name`.
    pub(crate) fn namespaces_get(&self, name: &str) -> Arc<Namespace> {
        self.namespaces.get(name)
    }

    /// Appends the storage key in `ns` of the user key `write_key` writes to `out`; returns
    /// where the user key starts.
    #[inline]
    fn key_into(
        &self,
        ns: &Namespace,
        write_key: impl FnOnce(&mut Vec<u8>) -> Result<(), codec::CodecError>,
        out: &mut Vec<u8>,
    ) -> Result<usize> {
        if self.resolves_generations {
            ns.key_prefix_current(out);
        } else {
            let generation = ns.generation(&*self.backend, self.private_counters)?;
            ns.key_prefix(generation, out);
        }
        let at = out.len();
        write_key(out).map_err(encode_error("key"))?;
        Ok(at)
    }

    fn tag_generation(&self, tag: &[u8]) -> Result<u64> {
        self.backend
            .counter(&format!("tag:{}", String::from_utf8_lossy(tag)))
    }

    /// Whether an entry is neither expired nor evicted by its tags.
    #[inline]
    fn is_live(&self, env: &Envelope<'_>) -> Result<bool> {
        if env.expires_at != 0 && env.expires_at <= now_ms() {
            return Ok(false);
        }
        for (tag, generation) in env.tags() {
            if self.tag_generation(tag)? != generation {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Decodes the value of an entry as `T` (checking its fingerprint first).
    fn decode_entry<T: Value>(
        ns: &Namespace,
        env: &Envelope<'_>,
        skey: &[u8],
        user_at: usize,
    ) -> Result<T> {
        let decode_error = |message: String| Error::Decode {
            key: describe_key(&ns.name, &skey[user_at..]),
            type_name: std::any::type_name::<T>(),
            message,
        };
        if env.fingerprint != type_fingerprint::<T>() {
            return Err(decode_error(
                "it was stored as another type (or another shape of this type)".into(),
            ));
        }
        codec::decode(env.payload).map_err(|e| decode_error(e.to_string()))
    }

    /// The live value at `skey` as a `T`: `None` if absent, expired or evicted by a tag; a
    /// value of another type is [`Error::Decode`].
    #[inline]
    fn read<T: Value>(&self, ns: &Namespace, skey: &[u8], user_at: usize) -> Result<Option<T>> {
        // The fast path: a value kept decoded in memory, needing no check but its expiry.
        if let Some(memory) = self.backend.memory_tier()
            && let Some(value) = memory.kept::<T>(skey, now_ms)
        {
            return Ok(Some(value));
        }
        let mut found = None;
        self.backend.read_stored(skey, &mut |stored| {
            found = Some(match stored {
                Some(stored) => self.read_stored::<T>(ns, stored, skey, user_at),
                None => Ok(None),
            });
        })?;
        found.unwrap_or(Ok(None))
    }

    /// [`read`](Shared::read), on what the backend handed over.
    #[inline]
    fn read_stored<T: Value>(
        &self,
        ns: &Namespace,
        stored: &Stored<'_>,
        skey: &[u8],
        user_at: usize,
    ) -> Result<Option<T>> {
        let env = envelope::decode(stored.bytes()).map_err(|m| Error::Decode {
            key: describe_key(&ns.name, &skey[user_at..]),
            type_name: std::any::type_name::<T>(),
            message: m.to_string(),
        })?;
        if !self.is_live(&env)? {
            return Ok(None);
        }
        // A memory entry: its value may be kept decoded beside it (read here when tags had to
        // be checked), or is kept now.
        let memory = stored
            .memory_bytes()
            .and_then(|bytes| Some((self.backend.memory_tier()?, bytes)));
        if let Some((memory, bytes)) = memory
            && let Some(value) = memory.kept_from::<T>(skey, bytes)
        {
            return Ok(Some(value));
        }
        let value: T = Self::decode_entry(ns, &env, skey, user_at)?;
        if let Some((memory, bytes)) = memory {
            let has_tags = env.tags().next().is_some();
            memory.keep(
                skey,
                bytes,
                Decoded::new(value.clone(), env.expires_at, has_tags),
            );
        }
        Ok(Some(value))
    }

    /// Appends the stored form of `value` (envelope and encoding) to `out`.
    fn entry_into<T: Value>(&self, value: &T, opts: &SetOptions, out: &mut Vec<u8>) -> Result<()> {
        let mut tags = Vec::with_capacity(opts.tags.len());
        for tag in &opts.tags {
            tags.push((tag.as_str(), self.tag_generation(tag.as_bytes())?));
        }
        let expires = expires_at(opts.ttl.or(self.default_ttl));
        envelope::encode_header(type_fingerprint::<T>(), expires, &tags, out).map_err(
            |message| Error::Encode {
                what: "value",
                message,
            },
        )?;
        codec::encode_value_into(value, out).map_err(encode_error("value"))
    }

    /// Stores `entry` under `skey`, giving back the key's lease if `lease` holds it.
    fn write(
        &self,
        ns: &Namespace,
        skey: &[u8],
        entry: &[u8],
        opts: &SetOptions,
        lease: Option<u64>,
    ) -> Result<()> {
        let ttl = opts.ttl.or(self.default_ttl);
        match lease {
            Some(token) => self.backend.set_and_release(skey, entry, ttl, token)?,
            None => self.backend.set(skey, entry, ttl)?,
        }
        ns.counts.write();
        Ok(())
    }

    /// A read's result, counted: an error, a hit or a miss.
    fn counted_read<T>(ns: &Namespace, result: Result<Option<T>>) -> Result<Option<T>> {
        let found = Shared::counted(ns, result)?;
        if found.is_some() {
            ns.counts.hit();
        } else {
            ns.counts.miss();
        }
        Ok(found)
    }

    fn counted<R>(ns: &Namespace, result: Result<R>) -> Result<R> {
        if result.is_err() {
            ns.counts.error();
        }
        result
    }

    /// Reads for `get_or_insert_with`: a value that does not decode is a miss to recompute;
    /// a backend failure is counted and, unless strict, also a miss.
    #[inline]
    fn read_for_compute<T: Value>(
        &self,
        ns: &Namespace,
        skey: &[u8],
        user_at: usize,
        on_failure: OnFailure,
    ) -> Result<Option<T>> {
        self.read::<T>(ns, skey, user_at)
            .or_else(|e| Self::lenient(ns, on_failure, e, None))
    }

    /// Whether `caller` waits on the backend through its `_async` methods.
    fn waits_async(&self, caller: Caller) -> bool {
        caller == Caller::Async && self.backend.is_async()
    }

    /// [`read_for_compute`](Shared::read_for_compute), through the backend's async methods
    /// for an async caller where it has them.
    async fn read_for_compute_by<T: Value>(
        &self,
        ns: &Namespace,
        skey: &[u8],
        user_at: usize,
        on_failure: OnFailure,
        caller: Caller,
    ) -> Result<Option<T>> {
        if !self.waits_async(caller) {
            return self.read_for_compute(ns, skey, user_at, on_failure);
        }
        let read = match self.backend.get_async(skey).await {
            Ok(Some(bytes)) => self.read_stored::<T>(ns, &Stored::from_bytes(bytes), skey, user_at),
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        };
        read.or_else(|e| Self::lenient(ns, on_failure, e, None))
    }

    /// [`lookup`](Shared::lookup) for an async caller: through the backend's async methods
    /// where it has them (then the key is built in a buffer of its own, since the task may
    /// move between threads while it waits).
    pub(crate) async fn lookup_async<T: Value>(
        &self,
        ns: &Namespace,
        write_key: impl FnOnce(&mut Vec<u8>) -> Result<(), codec::CodecError>,
        on_failure: OnFailure,
        lease: bool,
    ) -> Result<Lookup<T>> {
        if !self.waits_async(Caller::Async) {
            return self.lookup(ns, write_key, on_failure, lease);
        }
        let flights_ended = self.flights.ended();
        let mut key = Vec::new();
        let user_at = match self.key_into(ns, write_key, &mut key) {
            Ok(at) => at,
            Err(e) => {
                return Self::lenient(ns, on_failure, e, ()).map(|()| {
                    Lookup::Miss(MissedKey {
                        key: None,
                        user_at: 0,
                        flights_ended,
                        lease: LeaseState::Unused,
                    })
                });
            }
        };
        if let Some(v) = self.memory_tier_hit::<T>(ns, &key, user_at) {
            ns.counts.hit();
            return Ok(Lookup::Hit(v));
        }
        let token = lease::new_token();
        let (read, held) = match self.lease.filter(|_| lease) {
            Some(duration) => (
                self.backend
                    .read_or_lease_async(&key, token, duration)
                    .await,
                LeaseState::Held(token),
            ),
            None => (
                self.backend
                    .get_async(&key)
                    .await
                    .map(|found| found.map_or(Leased::Taken, Leased::Found)),
                LeaseState::Unused,
            ),
        };
        let (found, state) = self.interpret_read::<T>(ns, &key, user_at, on_failure, read, held)?;
        Ok(match found {
            Some(v) => {
                ns.counts.hit();
                Lookup::Hit(v)
            }
            None => Lookup::Miss(MissedKey {
                key: Some(key),
                user_at,
                flights_ended,
                lease: state,
            }),
        })
    }

    /// What a read for computing found: a value, or a miss with the state of the key's lease
    /// (`taken`: what holding it is, when the read took it).
    fn interpret_read<T: Value>(
        &self,
        ns: &Namespace,
        skey: &[u8],
        user_at: usize,
        on_failure: OnFailure,
        read: Result<Leased>,
        taken: LeaseState,
    ) -> Result<(Option<T>, LeaseState)> {
        match read {
            Ok(Leased::Found(bytes)) => {
                // Expired or evicted by a tag: a miss, computed without a lease.
                let found = self
                    .read_stored::<T>(ns, &Stored::from_bytes(bytes), skey, user_at)
                    .or_else(|e| Self::lenient(ns, on_failure, e, None))?;
                Ok((found, LeaseState::Unused))
            }
            Ok(Leased::Taken) => Ok((None, taken)),
            Ok(Leased::HeldElsewhere) => Ok((None, LeaseState::Elsewhere)),
            Err(e) => Self::lenient(ns, on_failure, e, (None, LeaseState::Failed)),
        }
    }

    /// What a failure while computing comes to: counted, then returned if strict (a value
    /// that does not decode never is: it is recomputed), else `instead`.
    fn lenient<R>(ns: &Namespace, on_failure: OnFailure, e: Error, instead: R) -> Result<R> {
        ns.counts.error();
        if on_failure == OnFailure::Fail && !matches!(e, Error::Decode { .. }) {
            Err(e)
        } else {
            Ok(instead)
        }
    }

    /// [`read_for_compute`](Shared::read_for_compute), taking the key's lease if it is missing
    /// and the cache uses leases (`lease`).
    fn read_or_lease_for_compute<T: Value>(
        &self,
        ns: &Namespace,
        skey: &[u8],
        user_at: usize,
        on_failure: OnFailure,
        lease: bool,
    ) -> Result<(Option<T>, LeaseState)> {
        let Some(duration) = self.lease.filter(|_| lease) else {
            return match self.read::<T>(ns, skey, user_at) {
                Ok(found) => Ok((found, LeaseState::Unused)),
                // A value that does not decode: recomputed and overwritten.
                Err(e @ Error::Decode { .. }) => {
                    Self::lenient(ns, on_failure, e, (None, LeaseState::Unused))
                }
                Err(e) => Self::lenient(ns, on_failure, e, (None, LeaseState::Failed)),
            };
        };
        if let Some(found) = self.memory_tier_hit::<T>(ns, skey, user_at) {
            return Ok((Some(found), LeaseState::Unused));
        }
        let token = lease::new_token();
        let read = self.backend.read_or_lease(skey, token, duration);
        self.interpret_read(ns, skey, user_at, on_failure, read, LeaseState::Held(token))
    }

    /// A live value in the memory tier in front of a slower one, decoded once and kept there
    /// (a lease or an async read of the slower tier hands over bytes only). Anything else,
    /// failures included, is left to the read of the whole backend.
    fn memory_tier_hit<T: Value>(&self, ns: &Namespace, skey: &[u8], user_at: usize) -> Option<T> {
        let memory = self.backend.memory_tier()?;
        let stored = memory.get_stored(skey).ok()??;
        self.read_stored::<T>(ns, &stored, skey, user_at).ok()?
    }

    /// The whole of a memory hit, counted: the value kept decoded in memory under the key
    /// `write_key` writes, if there is one needing no check but its expiry. Anything else
    /// (a miss, a value to decode, tags to check, an error) is left to [`Shared::lookup`].
    #[inline]
    pub(crate) fn kept_hit<T: Value>(
        &self,
        ns: &Namespace,
        write_key: impl FnOnce(&mut Vec<u8>) -> Result<(), codec::CodecError>,
    ) -> Option<T> {
        let memory = self.backend.memory_tier()?;
        let value = with_key_buffer(|key| {
            self.key_into(ns, write_key, key).ok()?;
            memory.kept::<T>(key, now_ms)
        })?;
        ns.counts.hit();
        Some(value)
    }

    /// Looks the key `write_key` writes up for `get_or_insert_with`: a hit (counted), or what
    /// computing needs.
    #[inline]
    pub(crate) fn lookup<T: Value>(
        &self,
        ns: &Namespace,
        write_key: impl FnOnce(&mut Vec<u8>) -> Result<(), codec::CodecError>,
        on_failure: OnFailure,
        lease: bool,
    ) -> Result<Lookup<T>> {
        let flights_ended = self.flights.ended();
        let found = with_key_buffer(|key| {
            let user_at = match self.key_into(ns, write_key, key) {
                Ok(at) => at,
                Err(e) => {
                    ns.counts.error();
                    return match on_failure {
                        OnFailure::Fail => Err(e),
                        // The key cannot even be built: compute without the cache.
                        OnFailure::Compute => Ok(Lookup::Miss(MissedKey {
                            key: None,
                            user_at: 0,
                            flights_ended,
                            lease: LeaseState::Unused,
                        })),
                    };
                }
            };
            let (found, lease) =
                self.read_or_lease_for_compute(ns, key, user_at, on_failure, lease)?;
            Ok(match found {
                Some(v) => Lookup::Hit(v),
                None => Lookup::Miss(MissedKey {
                    key: Some(key.clone()),
                    user_at,
                    flights_ended,
                    lease,
                }),
            })
        })?;
        if matches!(found, Lookup::Hit(_)) {
            ns.counts.hit();
        }
        Ok(found)
    }

    /// Stores a computed value; failures are counted and, unless strict, ignored (the caller
    /// has its value either way). Returns the stored entry for waiting callers.
    /// `(lease, caller)`: the key's lease to give back with the write, and who waits for it.
    async fn store_computed<T: Value>(
        &self,
        ns: &Namespace,
        skey: &[u8],
        value: &T,
        opts: &SetOptions,
        on_failure: OnFailure,
        (lease, caller): (Option<u64>, Caller),
    ) -> Result<Option<Arc<[u8]>>> {
        let stored = if self.waits_async(caller) {
            let mut entry = Vec::new();
            match self.entry_into(value, opts, &mut entry) {
                Ok(()) => {
                    let ttl = opts.ttl.or(self.default_ttl);
                    let written = match lease {
                        Some(token) => {
                            self.backend
                                .set_and_release_async(skey, &entry, ttl, token)
                                .await
                        }
                        None => self.backend.set_async(skey, &entry, ttl).await,
                    };
                    written.map(|()| {
                        ns.counts.write();
                        Arc::from(entry)
                    })
                }
                Err(e) => Err(e),
            }
        } else {
            with_buffers(|b| {
                self.entry_into(value, opts, &mut b.value)?;
                self.write(ns, skey, &b.value, opts, lease)?;
                Ok(Arc::from(&b.value[..]))
            })
        };
        match stored {
            Ok(entry) => Ok(Some(entry)),
            Err(e) => {
                ns.counts.error();
                match on_failure {
                    OnFailure::Fail => Err(e),
                    OnFailure::Compute => Ok(None),
                }
            }
        }
    }

    /// Computes the value of a key that missed, once per key across the threads and tasks
    /// of this process: lead the key's flight and compute, or wait for its leader. A caller
    /// that cannot wait (see `flight`), or whose leader failed, computes at once on its own.
    pub(crate) async fn compute<T, E, F, Fut>(
        &self,
        ns: &Namespace,
        missed: MissedKey,
        opts: &SetOptions,
        on_failure: OnFailure,
        caller: Caller,
        f: F,
    ) -> Result<T, E>
    where
        T: Value,
        E: From<Error>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let MissedKey {
            key,
            user_at,
            flights_ended,
            lease: lease_state,
        } = missed;
        let Some(skey) = key else {
            ns.counts.miss();
            return f().await;
        };
        let flight = match self.flights.join(&skey, caller) {
            Role::Leader(_) if lease_state == LeaseState::Failed => {
                // The backend just failed (a timeout, say): computing without it keeps the
                // call to one wait on the backend, where storing would add another.
                ns.counts.miss();
                return f().await;
            }
            Role::Leader(leader) => {
                let mut state = lease_state;
                if let (LeaseState::Elsewhere, Some(duration)) = (state, self.lease) {
                    // Another process or machine computes it: wait for its value.
                    match lease::wait(&*self.backend, &skey, duration, caller).await {
                        Ok(Waited::Found(bytes)) => {
                            let stored = Stored::from_bytes(bytes);
                            if let Ok(Some(v)) = self.read_stored::<T>(ns, &stored, &skey, user_at)
                            {
                                ns.counts.hit();
                                return Ok(v);
                            }
                            state = LeaseState::Unused;
                        }
                        Ok(Waited::Compute(taken)) => state = taken,
                        Err(e) => state = Self::lenient(ns, on_failure, e, LeaseState::Unused)?,
                    }
                }
                // Given back if we return without storing.
                let lease = LeaseGuard::new(&*self.backend, &skey, state);
                // Stored by a flight that ended between our read and our joining? (Unless no
                // flight ended since: then reading again would cost a round trip for nothing.)
                if self.flights.ended() != flights_ended
                    && let Some(v) = self
                        .read_for_compute_by(ns, &skey, user_at, on_failure, caller)
                        .await?
                {
                    ns.counts.hit();
                    return Ok(v);
                }
                ns.counts.miss();
                let value = f().await?;
                let stored = self
                    .store_computed(ns, &skey, &value, opts, on_failure, (lease.token(), caller))
                    .await?;
                if let Some(entry) = stored {
                    lease.disarm();
                    leader.finish(entry);
                }
                return Ok(value);
            }
            Role::Follower(flight) => {
                // Our leader in this process computes; a lease we took would only make
                // callers elsewhere wait for nothing.
                if let LeaseState::Held(token) = lease_state {
                    let _ = self.backend.release_lease(&skey, token);
                }
                flight
            }
        };
        if flight.can_wait(caller)
            && let Some(entry) = flight.wait_async().await
            && let Ok(env) = envelope::decode(&entry)
            && let Ok(value) = Self::decode_entry::<T>(ns, &env, &skey, user_at)
        {
            ns.counts.hit();
            return Ok(value);
        }
        ns.counts.miss();
        let value = f().await?;
        self.store_computed(ns, &skey, &value, opts, on_failure, (None, caller))
            .await?;
        Ok(value)
    }
}

impl Cache {
    /// A cache over `backend` with default settings.
    pub fn with_backend(backend: impl Backend) -> Cache {
        Cache::from_parts(Box::new(backend), None, false, Some(DEFAULT_LEASE))
    }

    pub(crate) fn from_parts(
        backend: Box<dyn Backend>,
        default_ttl: Option<Duration>,
        strict: bool,
        lease: Option<Duration>,
    ) -> Cache {
        let shared = Arc::new(Shared {
            lease: lease.filter(|_| backend.supports_leases()),
            private_counters: backend.counters_are_private(),
            resolves_generations: backend.resolves_generations(),
            backend,
            default_ttl,
            on_failure: if strict {
                OnFailure::Fail
            } else {
                OnFailure::Compute
            },
            flights: Flights::default(),
            namespaces: Namespaces::default(),
        });
        let ns = shared.namespaces.get(DEFAULT_NAMESPACE);
        Cache { shared, ns }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// A persistent cache in directory `dir` (created if needed) on logcache's own engine,
    /// with default options. See [`CacheBuilder`](crate::CacheBuilder) for the rest.
    pub fn open(dir: impl AsRef<std::path::Path>) -> Result<Cache> {
        crate::CacheBuilder::new().disk(dir.as_ref()).build()
    }

    /// An in-process cache of at most `capacity` entries (0: a cache that stores nothing;
    /// `set` is then [`Error::TooLarge`] and memoized functions compute every call).
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
        Cache {
            ns: self.shared.namespaces.get(name),
            shared: Arc::clone(&self.shared),
        }
    }

    /// This handle's namespace.
    pub fn namespace_name(&self) -> &str {
        &self.ns.name
    }

    /// Whether backend failures fail `get_or_insert_with` (see
    /// [`CacheBuilder::strict`](crate::CacheBuilder::strict)).
    pub fn is_strict(&self) -> bool {
        self.shared.on_failure == OnFailure::Fail
    }

    /// The backend underneath.
    pub fn backend(&self) -> &dyn Backend {
        &*self.shared.backend
    }

    /// The disk engine underneath (a disk cache, or a memory tier over one): its statistics,
    /// compaction and verification, on the store this cache has open.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let cache = logcache::Cache::open(dir.path())?;
    /// cache.set("k", &1u8)?;
    /// let store = cache.engine().expect("a disk cache");
    /// assert_eq!(store.stats().keys, 1);
    /// store.compact()?;
    /// # Ok::<(), logcache::Error>(())
    /// ```
    pub fn engine(&self) -> Option<&logcache_engine::Store> {
        self.shared.backend.engine()
    }

    /// The backend key of `key` in this namespace, and where the user key starts in it.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn storage_key<K: Serialize + ?Sized>(&self, key: &K) -> Result<(Vec<u8>, usize)> {
        let mut out = Vec::new();
        let at = self.shared.key_into(&self.ns, user_key(key), &mut out)?;
        Ok((out, at))
    }

    /// The value under `key`, or `None` if there is none (or it expired, or its tag was
    /// evicted, or its namespace cleared). A value stored as another type is
    /// [`Error::Decode`], never a misread value.
    pub fn get<T: Value>(&self, key: &(impl Serialize + ?Sized)) -> Result<Option<T>> {
        let (shared, ns) = (&*self.shared, &*self.ns);
        let result = with_buffers(|b| {
            let at = shared.key_into(ns, user_key(key), &mut b.key)?;
            shared.read::<T>(ns, &b.key, at)
        });
        Shared::counted_read(ns, result)
    }

    /// [`get`](Cache::get) for async code: where the backend waits without holding a thread
    /// (Redis with the `tokio` feature), many tasks share one multiplexed connection and a
    /// `current_thread` runtime serves them all; elsewhere it is [`get`](Cache::get).
    pub async fn get_async<T: Value>(&self, key: &(impl Serialize + ?Sized)) -> Result<Option<T>> {
        let (shared, ns) = (&*self.shared, &*self.ns);
        if !shared.waits_async(Caller::Async) {
            return self.get(key);
        }
        let result = async {
            let mut skey = Vec::new();
            let at = shared.key_into(ns, user_key(key), &mut skey)?;
            match shared.backend.get_async(&skey).await? {
                Some(bytes) => shared.read_stored::<T>(ns, &Stored::from_bytes(bytes), &skey, at),
                None => Ok(None),
            }
        }
        .await;
        Shared::counted_read(ns, result)
    }

    /// [`set`](Cache::set) for async code, as [`get_async`](Cache::get_async).
    pub async fn set_async<T: Value>(
        &self,
        key: &(impl Serialize + ?Sized),
        value: &T,
    ) -> Result<()> {
        let (shared, ns) = (&*self.shared, &*self.ns);
        if !shared.waits_async(Caller::Async) {
            return self.set(key, value);
        }
        let result = async {
            let (mut skey, mut entry) = (Vec::new(), Vec::new());
            shared.key_into(ns, user_key(key), &mut skey)?;
            let opts = SetOptions::new();
            shared.entry_into(value, &opts, &mut entry)?;
            shared
                .backend
                .set_async(&skey, &entry, shared.default_ttl)
                .await?;
            ns.counts.write();
            Ok(())
        }
        .await;
        Shared::counted(ns, result)
    }

    /// Stores `value` under `key` (with the cache's default TTL, if any).
    pub fn set<T: Value>(&self, key: &(impl Serialize + ?Sized), value: &T) -> Result<()> {
        self.set_with(key, value, &SetOptions::new())
    }

    /// Stores `value` under `key`; it reads as absent once `ttl` has passed.
    pub fn set_with_ttl<T: Value>(
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
    pub fn set_with<T: Value>(
        &self,
        key: &(impl Serialize + ?Sized),
        value: &T,
        opts: &SetOptions,
    ) -> Result<()> {
        let (shared, ns) = (&*self.shared, &*self.ns);
        let result = with_buffers(|b| {
            shared.key_into(ns, user_key(key), &mut b.key)?;
            shared.entry_into(value, opts, &mut b.value)?;
            shared.write(ns, &b.key, &b.value, opts, None)
        });
        Shared::counted(ns, result)
    }

    /// Removes `key`; returns whether a value was stored under it.
    pub fn delete(&self, key: &(impl Serialize + ?Sized)) -> Result<bool> {
        let (shared, ns) = (&*self.shared, &*self.ns);
        let result = with_buffers(|b| {
            shared.key_into(ns, user_key(key), &mut b.key)?;
            shared.backend.delete(&b.key)
        });
        Shared::counted(ns, result)
    }

    /// Whether a live value is stored under `key` (of any type).
    pub fn contains(&self, key: &(impl Serialize + ?Sized)) -> Result<bool> {
        let (shared, ns) = (&*self.shared, &*self.ns);
        let result = with_buffers(|b| {
            shared.key_into(ns, user_key(key), &mut b.key)?;
            let Some(stored) = shared.backend.get_stored(&b.key)? else {
                return Ok(false);
            };
            match envelope::decode(stored.bytes()) {
                Ok(env) => shared.is_live(&env),
                // Damaged, but something is stored.
                Err(_) => Ok(true),
            }
        });
        Shared::counted(ns, result)
    }

    /// Drops every entry of this namespace at once, in O(1): the namespace moves to a new
    /// generation, and entries of older generations are never read again. (They stay on
    /// disk until evicted or until [`Cache::vacuum`] removes them.)
    pub fn clear(&self) -> Result<()> {
        let result = self.ns.advance(&*self.shared.backend).map(drop);
        Shared::counted(&self.ns, result)
    }

    /// Removes the entries of this namespace's older generations (left behind by
    /// [`Cache::clear`]) from the backend. Takes time proportional to the number of keys.
    pub fn vacuum(&self) -> Result<u64> {
        let result = self
            .ns
            .generation(&*self.shared.backend, self.shared.private_counters)
            .and_then(|current| {
                let mut removed = 0;
                for generation in 0..current {
                    let mut prefix = Vec::new();
                    self.ns.key_prefix(generation, &mut prefix);
                    removed += self.shared.backend.delete_prefix(&prefix)?;
                }
                Ok(removed)
            });
        Shared::counted(&self.ns, result)
    }

    /// Drops every entry tagged `tag`, in every namespace, at once (O(1), like
    /// `diskcache`'s `evict(tag)`).
    pub fn evict_tag(&self, tag: &str) -> Result<()> {
        let result = self
            .shared
            .backend
            .increment(&format!("tag:{tag}"))
            .map(drop);
        Shared::counted(&self.ns, result)
    }

    /// Statistics of every namespace of this cache, and of every tier of its backend.
    pub fn stats(&self) -> CacheStats {
        let (total, namespaces) = self.shared.namespaces.counts();
        let tiers = self.shared.backend.tiers();
        CacheStats {
            total,
            namespaces,
            evictions: tiers.iter().map(|t| t.evictions).sum(),
            tiers,
        }
    }

    /// Sets every statistic to zero.
    pub fn reset_stats(&self) {
        self.shared.namespaces.reset();
    }

    /// Makes writes so far as durable as the backend can.
    pub fn flush(&self) -> Result<()> {
        Shared::counted(&self.ns, self.shared.backend.flush())
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
        T: Value,
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
        T: Value,
        F: FnOnce() -> T,
    {
        self.compute_blocking(key, opts, || Ok::<T, Error>(f()))
    }

    /// The value under `key`, or the `Ok` of `f()` stored under it. An `Err` is returned
    /// and not cached: the next call runs `f` again. Callers that were waiting for this
    /// computation of the key then compute at once, each on its own. Cache errors convert
    /// into `E`.
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
        T: Value,
        E: From<Error>,
        F: FnOnce() -> Result<T, E>,
    {
        self.compute_blocking(key, &SetOptions::new(), f)
    }

    fn compute_blocking<T, E, F>(
        &self,
        key: &(impl Serialize + ?Sized),
        opts: &SetOptions,
        f: F,
    ) -> Result<T, E>
    where
        T: Value,
        E: From<Error>,
        F: FnOnce() -> Result<T, E>,
    {
        let (shared, ns) = (&*self.shared, &*self.ns);
        match shared.lookup(ns, user_key(key), shared.on_failure, true)? {
            Lookup::Hit(v) => Ok(v),
            Lookup::Miss(missed) => block_on(shared.compute(
                ns,
                missed,
                opts,
                shared.on_failure,
                Caller::blocking(),
                || std::future::ready(f()),
            )),
        }
    }

    /// Async form of [`get_or_insert_with`](Cache::get_or_insert_with): waiting for another
    /// task's computation does not block the thread. Backend I/O itself is synchronous.
    pub async fn get_or_insert_with_async<T, F, Fut>(
        &self,
        key: &(impl Serialize + ?Sized),
        f: F,
    ) -> Result<T>
    where
        T: Value,
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        self.try_get_or_insert_with_async(key, || async { Ok::<T, Error>(f().await) })
            .await
    }

    /// Async form of [`try_get_or_insert_with`](Cache::try_get_or_insert_with).
    pub async fn try_get_or_insert_with_async<T, E, F, Fut>(
        &self,
        key: &(impl Serialize + ?Sized),
        f: F,
    ) -> Result<T, E>
    where
        T: Value,
        E: From<Error>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let (shared, ns) = (&*self.shared, &*self.ns);
        match shared
            .lookup_async(ns, user_key(key), shared.on_failure, true)
            .await?
        {
            Lookup::Hit(v) => Ok(v),
            Lookup::Miss(missed) => {
                shared
                    .compute(
                        ns,
                        missed,
                        &SetOptions::new(),
                        shared.on_failure,
                        Caller::Async,
                        f,
                    )
                    .await
            }
        }
    }
}
