//! The shared backend (feature `redis`): a Redis server, so many processes and machines use
//! one cache. Entries and counters live under a key prefix; `clear` never touches other keys.

use std::time::Duration;

use parking_lot::Mutex;
use redis::{Client, Connection, RedisError};

use crate::backend::Backend;
use crate::error::{Error, Result};

/// Entries on a Redis server, shared by every process that opens the same URL and prefix.
///
/// Connections are made lazily and pooled, so a server that is down when the cache is built,
/// or restarts later, gives [`Error::Backend`] for the operations meanwhile, and the cache
/// recovers on its own once the server is back. TTLs become Redis expiries (`SET ... PX`).
/// Namespace and tag counters are plain Redis integers (`INCR`) without expiry: with an
/// eviction policy that may evict keys without a TTL (`allkeys-*`), a cleared namespace could
/// come back; use a `volatile-*` policy or `noeviction`.
pub struct RedisBackend {
    client: Client,
    prefix: Vec<u8>,
    timeout: Duration,
    idle: Mutex<Vec<Connection>>,
}

/// Connections kept for reuse.
const MAX_IDLE: usize = 16;

fn backend_error(e: RedisError) -> Error {
    Error::Backend {
        backend: "redis",
        message: e.to_string(),
    }
}

impl RedisBackend {
    /// A backend for the server at `url` (`redis://[:password@]host:port[/db]`), with keys
    /// under the prefix `logcache:` and a 2-second timeout. Does not connect yet.
    pub fn open(url: &str) -> Result<RedisBackend> {
        let client = Client::open(url).map_err(backend_error)?;
        Ok(RedisBackend {
            client,
            prefix: b"logcache:".to_vec(),
            timeout: Duration::from_secs(2),
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Keys go under `prefix` (default `logcache:`): caches with different prefixes share a
    /// server without seeing each other.
    pub fn with_prefix(mut self, prefix: impl Into<Vec<u8>>) -> RedisBackend {
        self.prefix = prefix.into();
        self
    }

    /// Connect, read and write timeout (default 2 s).
    pub fn with_timeout(mut self, timeout: Duration) -> RedisBackend {
        self.timeout = timeout;
        self
    }

    fn key(&self, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + key.len());
        k.extend_from_slice(&self.prefix);
        k.extend_from_slice(key);
        k
    }

    fn counter_key(&self, name: &str) -> Vec<u8> {
        // A NUL byte cannot start an entry key (entry keys start with a length), so counters
        // never collide with entries.
        self.key(format!("\0counter:{name}").as_bytes())
    }

    fn connect(&self) -> Result<Connection> {
        let con = self
            .client
            .get_connection_with_timeout(self.timeout)
            .map_err(backend_error)?;
        con.set_read_timeout(Some(self.timeout))
            .map_err(backend_error)?;
        con.set_write_timeout(Some(self.timeout))
            .map_err(backend_error)?;
        Ok(con)
    }

    /// Runs `f` on a pooled connection (see [`blocking`]). A connection that failed is
    /// dropped, so the next call connects afresh (after a server restart, say).
    fn with_connection<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> redis::RedisResult<T>,
    ) -> Result<T> {
        blocking(|| self.on_connection(f))
    }

    fn on_connection<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> redis::RedisResult<T>,
    ) -> Result<T> {
        let pooled = self.idle.lock().pop();
        let mut con = match pooled {
            Some(con) => con,
            None => self.connect()?,
        };
        match f(&mut con) {
            Ok(v) => {
                let mut idle = self.idle.lock();
                if idle.len() < MAX_IDLE {
                    idle.push(con);
                }
                Ok(v)
            }
            Err(e) => Err(backend_error(e)),
        }
    }
}

/// Runs a call that waits on the network. With the `tokio` feature, inside a multi-threaded
/// tokio runtime it runs under `block_in_place`, so the runtime's other tasks go on while it
/// waits.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    #[cfg(feature = "tokio")]
    if let Ok(handle) = tokio::runtime::Handle::try_current()
        && handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
    {
        return tokio::task::block_in_place(f);
    }
    f()
}

/// `prefix` with Redis glob characters escaped, then `*`.
fn glob_prefix(prefix: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len() * 2 + 1);
    for &b in prefix {
        if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\' | b'^' | b'-') {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'*');
    out
}

impl Backend for RedisBackend {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let key = self.key(key);
        self.with_connection(|c| redis::cmd("GET").arg(&key).query(c))
    }

    fn set(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<()> {
        let key = self.key(key);
        self.with_connection(|c| {
            let mut cmd = redis::cmd("SET");
            cmd.arg(&key).arg(value);
            if let Some(ttl) = ttl {
                cmd.arg("PX")
                    .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1));
            }
            cmd.query(c)
        })
    }

    fn delete(&self, key: &[u8]) -> Result<bool> {
        let key = self.key(key);
        self.with_connection(|c| redis::cmd("DEL").arg(&key).query::<u64>(c))
            .map(|n| n > 0)
    }

    fn contains(&self, key: &[u8]) -> Result<bool> {
        let key = self.key(key);
        self.with_connection(|c| redis::cmd("EXISTS").arg(&key).query::<u64>(c))
            .map(|n| n > 0)
    }

    fn delete_prefix(&self, prefix: &[u8]) -> Result<u64> {
        let pattern = glob_prefix(&self.key(prefix));
        self.with_connection(|c| {
            let mut cursor: u64 = 0;
            let mut removed = 0;
            loop {
                let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query(c)?;
                if !keys.is_empty() {
                    removed += redis::cmd("DEL").arg(&keys).query::<u64>(c)?;
                }
                if next == 0 {
                    return Ok(removed);
                }
                cursor = next;
            }
        })
    }

    fn counter(&self, name: &str) -> Result<u64> {
        let key = self.counter_key(name);
        self.with_connection(|c| redis::cmd("GET").arg(&key).query::<Option<u64>>(c))
            .map(Option::unwrap_or_default)
    }

    fn increment(&self, name: &str) -> Result<u64> {
        let key = self.counter_key(name);
        self.with_connection(|c| redis::cmd("INCR").arg(&key).query(c))
    }

    /// Redis evicts by its own policy and does not say whose keys: always 0.
    fn evictions(&self) -> u64 {
        0
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(glob_prefix(b"a*b?[c]\\"), b"a\\*b\\?\\[c\\]\\\\*".to_vec());
    }

    #[test]
    fn a_bad_url_is_a_typed_error_and_a_down_server_too() {
        assert!(matches!(
            RedisBackend::open("not a url"),
            Err(Error::Backend { .. })
        ));
        // Port 1 on loopback: nothing listens there.
        let down = RedisBackend::open("redis://127.0.0.1:1/")
            .unwrap()
            .with_timeout(Duration::from_millis(200));
        assert!(matches!(
            down.get(b"k"),
            Err(Error::Backend {
                backend: "redis",
                ..
            })
        ));
    }
}
