//! The shared backend (feature `redis`): a Redis server, so many processes and machines use
//! one cache. Entries and counters live under a key prefix; `clear` never touches other keys.

use std::time::Duration;

use std::sync::LazyLock;

#[cfg(feature = "tokio")]
use parking_lot::Mutex;
use redis::cluster::{ClusterClient, ClusterConnection};
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, Slot, SlotAddr};
use redis::{Client, Connection, ConnectionLike, RedisError};

#[cfg(feature = "tokio")]
use crate::backend::BackendFuture;
use crate::backend::{Backend, Leased};
use crate::error::{Error, Result};
use crate::namespace::Namespace;
use crate::redis_keys::{self, CurrentKey};

/// Entries on a Redis server, shared by every process that opens the same URL and prefix.
///
/// Connections are made lazily and pooled, so a server that is down when the cache is built,
/// or restarts later, gives [`Error::Backend`] for the operations meanwhile, and the cache
/// recovers on its own once the server is back. TTLs become Redis expiries (`SET ... PX`).
/// Namespace and tag counters are plain Redis integers (`INCR`) without expiry: with an
/// eviction policy that may evict keys without a TTL (`allkeys-*`), a cleared namespace could
/// come back; use a `volatile-*` policy or `noeviction`.
///
/// [`RedisBackend::cluster`] opens a Redis Cluster instead: a namespace's entries and its
/// generation live in one hash slot (docs/format.md, *Typed values*), so each operation is
/// one script on one node, and namespaces spread over the nodes.
pub struct RedisBackend {
    servers: Servers,
    prefix: Vec<u8>,
    timeout: Duration,
    /// Blocking connections kept for reuse.
    idle: deadpool::unmanaged::Pool<Pooled>,
    /// The connection async calls share (multiplexed), once made, with a number that tells
    /// it from the ones made before.
    #[cfg(feature = "tokio")]
    shared: Mutex<Option<(u64, aio::Shared)>>,
    /// Held while making it, so that tasks that find none at once make one, not one each.
    #[cfg(feature = "tokio")]
    connecting: tokio::sync::Mutex<()>,
    /// How many async connections were made.
    #[cfg(feature = "tokio")]
    made: std::sync::atomic::AtomicU64,
}

/// Where the entries are.
enum Servers {
    One(Box<Client>),
    Cluster(ClusterNodes),
}

/// How to reach a Redis Cluster: some of its nodes (the client finds the others), and the
/// certificate authority its TLS certificates come from, if not one the system trusts.
struct ClusterNodes {
    urls: Vec<String>,
    /// Set only by `cluster_tls` (feature `tls`).
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    root_cert: Option<Vec<u8>>,
}

impl ClusterNodes {
    /// A client with one `timeout` for connecting and for each response, and few retries: a
    /// node that is down makes the keys it holds fail soon (each retry waits a timeout), not
    /// after the client's default sixteen.
    fn client(&self, timeout: Duration) -> redis::RedisResult<ClusterClient> {
        let builder = ClusterClient::builder(self.urls.clone())
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .retries(2);
        #[cfg(feature = "tls")]
        let builder = match &self.root_cert {
            Some(root_cert) => builder.certs(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(root_cert.clone()),
            }),
            None => builder,
        };
        builder.build()
    }
}

/// A connection kept for reuse.
enum Pooled {
    One(Connection),
    Cluster(Box<ClusterConnection>),
}

impl Pooled {
    fn con(&mut self) -> &mut dyn ConnectionLike {
        match self {
            Pooled::One(c) => c,
            Pooled::Cluster(c) => &mut **c,
        }
    }
}

/// Connections kept for reuse.
const MAX_IDLE: usize = 16;

fn is_noscript(e: &RedisError) -> bool {
    e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
}

fn backend_error(e: RedisError) -> Error {
    Error::Backend {
        backend: "redis",
        message: e.to_string(),
    }
}

impl RedisBackend {
    /// A backend for the server at `url` (`redis://[user:password@]host:port[/db]`; with the
    /// `tls` feature also `rediss://`), with keys under the prefix `logcache:` and a 2-second
    /// timeout. Does not connect yet.
    pub fn open(url: &str) -> Result<RedisBackend> {
        let client = Client::open(url).map_err(backend_error)?;
        Ok(RedisBackend::on(Servers::One(Box::new(client))))
    }

    /// A backend for the server at `url` over TLS (`rediss://[user:password@]host:port[/db]`),
    /// trusting the certificate authority `root_cert` (PEM) besides the system's (feature
    /// `tls`). [`open`](RedisBackend::open) also takes `rediss://` URLs, trusting the system's
    /// authorities only.
    #[cfg(feature = "tls")]
    pub fn open_tls(url: &str, root_cert: &[u8]) -> Result<RedisBackend> {
        let certificates = redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(root_cert.to_vec()),
        };
        let client = Client::build_with_tls(url, certificates).map_err(backend_error)?;
        Ok(RedisBackend::on(Servers::One(Box::new(client))))
    }

    /// A backend for the Redis Cluster that the nodes at `urls` (some or all of its nodes,
    /// `redis://host:port`) belong to; otherwise as [`open`](RedisBackend::open). Work on keys
    /// whose node is unreachable (a node down, slots moving) is [`Error::Backend`] until the
    /// cluster serves them again.
    pub fn cluster<S: AsRef<str>>(urls: &[S]) -> Result<RedisBackend> {
        RedisBackend::on_cluster(urls, None)
    }

    /// [`cluster`](RedisBackend::cluster) over TLS (`rediss://` node URLs), trusting the
    /// certificate authority `root_cert` (PEM) besides the system's (feature `tls`). Every
    /// node must serve TLS; [`cluster`](RedisBackend::cluster) also takes `rediss://` URLs,
    /// trusting the system's authorities only.
    #[cfg(feature = "tls")]
    pub fn cluster_tls<S: AsRef<str>>(urls: &[S], root_cert: &[u8]) -> Result<RedisBackend> {
        RedisBackend::on_cluster(urls, Some(root_cert.to_vec()))
    }

    fn on_cluster<S: AsRef<str>>(urls: &[S], root_cert: Option<Vec<u8>>) -> Result<RedisBackend> {
        let nodes = ClusterNodes {
            urls: urls.iter().map(|u| u.as_ref().to_string()).collect(),
            root_cert,
        };
        // Checks the URLs (and the certificate) now; connects later.
        nodes
            .client(Duration::from_secs(2))
            .map_err(backend_error)?;
        Ok(RedisBackend::on(Servers::Cluster(nodes)))
    }

    fn on(servers: Servers) -> RedisBackend {
        RedisBackend {
            servers,
            prefix: b"logcache:".to_vec(),
            timeout: Duration::from_secs(2),
            idle: deadpool::unmanaged::Pool::new(MAX_IDLE),
            #[cfg(feature = "tokio")]
            shared: Mutex::new(None),
            #[cfg(feature = "tokio")]
            connecting: tokio::sync::Mutex::new(()),
            #[cfg(feature = "tokio")]
            made: std::sync::atomic::AtomicU64::new(0),
        }
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
        redis_keys::entry_key(&self.prefix, key)
    }

    fn counter_key(&self, name: &str) -> Vec<u8> {
        redis_keys::counter_key(&self.prefix, name)
    }

    /// Runs `script` on the entry key `current` names, in its namespace's current generation,
    /// with `args` after the key's parts: one round trip (`EVALSHA`; on `NOSCRIPT`, `EVAL`,
    /// which also caches the script on that node).
    fn in_current_generation<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        current: &CurrentKey<'_>,
        args: &[&[u8]],
    ) -> Result<T> {
        self.run_script(self.script_commands(script, current, args))
    }

    /// Runs `script` on entry `key`: in its namespace's current generation if the key says
    /// so, else on the key as named (one that carries its generation: a memory tier in
    /// front of this backend writes such keys).
    fn on_entry<T: redis::FromRedisValue>(
        &self,
        script: &EntryScript,
        key: &[u8],
        args: &[&[u8]],
    ) -> Result<T> {
        self.run_script(self.entry_commands(script, key, args))
    }

    /// [`on_entry`](RedisBackend::on_entry), async.
    #[cfg(feature = "tokio")]
    async fn on_entry_async<T: redis::FromRedisValue>(
        &self,
        script: &EntryScript,
        key: &[u8],
        args: &[&[u8]],
    ) -> Result<T> {
        self.run_script_async(self.entry_commands(script, key, args))
            .await
    }

    /// Sends `EVALSHA`, then on `NOSCRIPT` the `EVAL`: one round trip, or two the first time
    /// a node sees the script.
    fn run_script<T: redis::FromRedisValue>(
        &self,
        (evalsha, eval): (redis::Cmd, redis::Cmd),
    ) -> Result<T> {
        self.with_connection(|c| match evalsha.query(c.con()) {
            Err(e) if is_noscript(&e) => eval.query(c.con()),
            other => other,
        })
    }

    /// [`run_script`](RedisBackend::run_script), async.
    #[cfg(feature = "tokio")]
    async fn run_script_async<T: redis::FromRedisValue>(
        &self,
        (evalsha, eval): (redis::Cmd, redis::Cmd),
    ) -> Result<T> {
        match self.run_async(&evalsha).await {
            Err(e) if is_noscript(&e) => self.run_async(&eval).await,
            other => other,
        }
        .map_err(backend_error)
    }

    /// The commands of [`on_entry`](RedisBackend::on_entry).
    fn entry_commands(
        &self,
        script: &EntryScript,
        key: &[u8],
        args: &[&[u8]],
    ) -> (redis::Cmd, redis::Cmd) {
        match redis_keys::current_key(&self.prefix, key) {
            Some(current) => self.script_commands(&script.current, &current, args),
            None => script_calls(&script.named, &self.key(key), b"", b"", args),
        }
    }

    /// [`in_current_generation`](RedisBackend::in_current_generation), async.
    #[cfg(feature = "tokio")]
    async fn in_current_generation_async<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        current: &CurrentKey<'_>,
        args: &[&[u8]],
    ) -> Result<T> {
        self.run_script_async(self.script_commands(script, current, args))
            .await
    }

    /// The `EVALSHA` of `script` on `current` with `args`, and the `EVAL` to send instead on
    /// `NOSCRIPT`: not `SCRIPT LOAD`, which a cluster client sends to every node (and fails
    /// if one is down), while `EVAL` goes to the key's node only, and caches it there.
    fn script_commands(
        &self,
        script: &Script,
        current: &CurrentKey<'_>,
        args: &[&[u8]],
    ) -> (redis::Cmd, redis::Cmd) {
        let counter = self.counter_key(&Namespace::counter_name(current.namespace));
        script_calls(script, &counter, &current.head, current.tail, args)
    }

    /// Runs `cmd` on the shared async connection (made on first use), within one timeout
    /// for the whole call; a connection that failed is dropped, so the next call connects
    /// afresh. A connection found dropped (its runtime ended, the server restarted) is made
    /// again once within the call.
    #[cfg(feature = "tokio")]
    async fn query_async<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T> {
        self.run_async(cmd).await.map_err(backend_error)
    }

    /// [`query_async`](RedisBackend::query_async), with the server's error as it is.
    #[cfg(feature = "tokio")]
    async fn run_async<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        let run = async {
            let (made, mut con) = self.async_connection().await?;
            match con.query(cmd).await {
                Err(e) if e.is_connection_dropped() => {
                    self.drop_async_connection(made);
                    self.async_connection().await?.1.query(cmd).await
                }
                other => other,
            }
        };
        let result = match tokio::time::timeout(self.timeout, run).await {
            Ok(result) => result,
            Err(_) => Err(RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no answer within the timeout",
            ))),
        };
        if let Err(e) = &result
            && !is_noscript(e)
        {
            *self.shared.lock() = None;
        }
        result
    }

    /// The shared async connection and its number, made by the first task that finds none.
    #[cfg(feature = "tokio")]
    async fn async_connection(&self) -> redis::RedisResult<(u64, aio::Shared)> {
        if let Some(con) = self.shared.lock().clone() {
            return Ok(con);
        }
        let _connecting = self.connecting.lock().await;
        let last = match self.shared.lock().clone() {
            Some(con) => return Ok(con),
            None => self.made.load(std::sync::atomic::Ordering::Relaxed),
        };
        let con = (last + 1, aio::connect(&self.servers, self.timeout).await?);
        self.made
            .store(last + 1, std::sync::atomic::Ordering::Relaxed);
        *self.shared.lock() = Some(con.clone());
        Ok(con)
    }

    /// Forgets the shared async connection if it is still connection number `made` (another
    /// task may have made a new one meanwhile).
    #[cfg(feature = "tokio")]
    fn drop_async_connection(&self, made: u64) {
        let mut shared = self.shared.lock();
        if shared.as_ref().is_some_and(|(number, _)| *number == made) {
            *shared = None;
        }
    }

    fn connect(&self) -> Result<Pooled> {
        match &self.servers {
            Servers::One(client) => {
                let con = client
                    .get_connection_with_timeout(self.timeout)
                    .map_err(backend_error)?;
                con.set_read_timeout(Some(self.timeout))
                    .map_err(backend_error)?;
                con.set_write_timeout(Some(self.timeout))
                    .map_err(backend_error)?;
                Ok(Pooled::One(con))
            }
            Servers::Cluster(nodes) => {
                let con = nodes
                    .client(self.timeout)
                    .and_then(|client| client.get_connection())
                    .map_err(backend_error)?;
                Ok(Pooled::Cluster(Box::new(con)))
            }
        }
    }

    /// Runs `f` on a pooled connection (see [`blocking`]). A connection that failed is
    /// dropped, so the next call connects afresh (after a server restart, say).
    fn with_connection<T>(
        &self,
        f: impl FnOnce(&mut Pooled) -> redis::RedisResult<T>,
    ) -> Result<T> {
        blocking(|| self.on_connection(f))
    }

    /// Takes a kept connection if one is idle, else connects (so a refused connection fails
    /// at once, not after a wait for the pool). A connection that succeeds is kept (up to
    /// [`MAX_IDLE`]); one that fails is dropped.
    fn on_connection<T>(&self, f: impl FnOnce(&mut Pooled) -> redis::RedisResult<T>) -> Result<T> {
        use deadpool::unmanaged::Object;
        match self.idle.try_get() {
            Ok(mut kept) => f(&mut kept).map_err(|e| {
                drop(Object::take(kept));
                backend_error(e)
            }),
            Err(_) => {
                let mut con = self.connect()?;
                let value = f(&mut con).map_err(backend_error)?;
                // The pool may be full of connections other threads hold: drop this one.
                let _ = self.idle.try_add(con);
                Ok(value)
            }
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

/// The start of every script that works on an entry of a namespace's current generation:
/// `KEYS[1]` is the namespace's generation counter, `ARGV[1]` the entry's Redis key up to
/// the generation, `ARGV[2]` the rest; `key` becomes the entry's Redis key. The generation is
/// written as the cache writes it (`codec::write_uint`: the shortest MessagePack unsigned
/// integer). The entry key is in the counter's hash slot (`redis_keys`), so a cluster runs
/// the script on the node that holds both.
const CURRENT_KEY: &str = r"
local function uint(n)
  if n < 128 then return string.char(n) end
  if n < 256 then return string.char(204, n) end
  if n < 65536 then return string.char(205, math.floor(n / 256), n % 256) end
  local width, tag = 4, 206
  if n >= 4294967296 then width, tag = 8, 207 end
  local bytes = {}
  for i = width, 1, -1 do
    bytes[i] = n % 256
    n = math.floor(n / 256)
  end
  return string.char(tag, unpack(bytes))
end
local key = ARGV[1] .. uint(tonumber(redis.call('GET', KEYS[1]) or '0')) .. ARGV[2]
";

/// One of the scripts on the current generation: [`CURRENT_KEY`], then `body`.
/// A Lua script and its SHA-1, by which `EVALSHA` names it.
struct Script {
    code: String,
    sha1: String,
}

fn current_script(body: &str) -> Script {
    script(format!("{CURRENT_KEY}{body}"))
}

fn script(code: String) -> Script {
    let sha1 = redis::Script::new(&code).get_hash().to_string();
    Script { code, sha1 }
}

/// A script on one entry, in two forms: on a key in its namespace's current generation
/// ([`CURRENT_KEY`] finds it: `KEYS[1]` the counter, `ARGV[1]` and `ARGV[2]` the key's parts),
/// and on a key named in full (`KEYS[1]`; `ARGV[1]` and `ARGV[2]` unused). The body names
/// the entry `key`, and takes its own arguments from `ARGV[3]` on.
struct EntryScript {
    current: Script,
    named: Script,
}

fn entry_script(body: &str) -> EntryScript {
    EntryScript {
        current: current_script(body),
        named: script(format!("local key = KEYS[1]\n{body}")),
    }
}

/// `EVALSHA` of `script` with one key and `argv1`, `argv2`, then `args`, and the same `EVAL`.
fn script_calls(
    script: &Script,
    key: &[u8],
    argv1: &[u8],
    argv2: &[u8],
    args: &[&[u8]],
) -> (redis::Cmd, redis::Cmd) {
    let call = |name: &str, script: &str| {
        let mut cmd = redis::cmd(name);
        cmd.arg(script).arg(1).arg(key).arg(argv1).arg(argv2);
        for arg in args {
            cmd.arg(*arg);
        }
        cmd
    };
    (call("EVALSHA", &script.sha1), call("EVAL", &script.code))
}

static GET: LazyLock<Script> = LazyLock::new(|| current_script("return redis.call('GET', key)"));
/// `ARGV[3]`: the value; `ARGV[4]`: its time to live in milliseconds, or empty.
static SET: LazyLock<Script> = LazyLock::new(|| {
    current_script(
        "if ARGV[4] == '' then return redis.call('SET', key, ARGV[3]) end
         return redis.call('SET', key, ARGV[3], 'PX', ARGV[4])",
    )
});
static DEL: LazyLock<Script> = LazyLock::new(|| current_script("return redis.call('DEL', key)"));
static EXISTS: LazyLock<Script> =
    LazyLock::new(|| current_script("return redis.call('EXISTS', key)"));

/// The key of an entry's compute lease: the entry's key, a NUL byte, `lease` (in the entry's
/// slot; no entry key is another one with bytes after it, each being whole MessagePack
/// values). `ARGV[3]`: the caller's token; `ARGV[4]`: the lease in milliseconds. Returns
/// `{1, value}` if the entry holds one, `{2, nil}` if the lease was free and is now the
/// caller's, `{3, nil}` if another caller holds it.
static READ_OR_LEASE: LazyLock<EntryScript> = LazyLock::new(|| {
    entry_script(
        "local value = redis.call('GET', key)
         if value then return {1, value} end
         if redis.call('SET', key .. '\\0lease', ARGV[3], 'NX', 'PX', ARGV[4]) then return {2, false} end
         return {3, false}",
    )
});
/// As [`SET`], then deletes the lease if token `ARGV[5]` holds it.
static SET_AND_RELEASE: LazyLock<EntryScript> = LazyLock::new(|| {
    entry_script(
        "if ARGV[4] == '' then redis.call('SET', key, ARGV[3])
         else redis.call('SET', key, ARGV[3], 'PX', ARGV[4]) end
         local lease = key .. '\\0lease'
         if redis.call('GET', lease) == ARGV[5] then redis.call('DEL', lease) end
         return 1",
    )
});
/// Deletes the lease if token `ARGV[3]` holds it.
static RELEASE: LazyLock<EntryScript> = LazyLock::new(|| {
    entry_script(
        "local lease = key .. '\\0lease'
         if redis.call('GET', lease) == ARGV[3] then return redis.call('DEL', lease) end
         return 0",
    )
});

/// What [`READ_OR_LEASE`] replied.
fn leased(reply: (u8, Option<Vec<u8>>)) -> Leased {
    match reply {
        (1, Some(value)) => Leased::Found(value),
        (2, _) => Leased::Taken,
        _ => Leased::HeldElsewhere,
    }
}

/// A time to live in milliseconds, at least 1.
fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
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
        if let Some(current) = redis_keys::current_key(&self.prefix, key) {
            return self.in_current_generation(&GET, &current, &[]);
        }
        let key = self.key(key);
        self.with_connection(|c| redis::cmd("GET").arg(&key).query(c.con()))
    }

    fn set(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<()> {
        if let Some(current) = redis_keys::current_key(&self.prefix, key) {
            let ttl = ttl.map(|t| ttl_ms(t).to_string()).unwrap_or_default();
            return self.in_current_generation(&SET, &current, &[value, ttl.as_bytes()]);
        }
        let key = self.key(key);
        self.with_connection(|c| {
            let mut cmd = redis::cmd("SET");
            cmd.arg(&key).arg(value);
            if let Some(ttl) = ttl {
                cmd.arg("PX").arg(ttl_ms(ttl));
            }
            cmd.query(c.con())
        })
    }

    fn delete(&self, key: &[u8]) -> Result<bool> {
        if let Some(current) = redis_keys::current_key(&self.prefix, key) {
            return self
                .in_current_generation::<u64>(&DEL, &current, &[])
                .map(|n| n > 0);
        }
        let key = self.key(key);
        self.with_connection(|c| redis::cmd("DEL").arg(&key).query::<u64>(c.con()))
            .map(|n| n > 0)
    }

    fn contains(&self, key: &[u8]) -> Result<bool> {
        if let Some(current) = redis_keys::current_key(&self.prefix, key) {
            return self
                .in_current_generation::<u64>(&EXISTS, &current, &[])
                .map(|n| n > 0);
        }
        let key = self.key(key);
        self.with_connection(|c| redis::cmd("EXISTS").arg(&key).query::<u64>(c.con()))
            .map(|n| n > 0)
    }

    fn delete_prefix(&self, prefix: &[u8]) -> Result<u64> {
        let key = self.key(prefix);
        let pattern = glob_prefix(&key);
        // On a cluster, the keys of a namespace are all on the node of its slot; other
        // prefixes would have to visit every node.
        let node = match self.servers {
            Servers::One(_) => None,
            Servers::Cluster(_) if redis_keys::namespace_of(prefix).is_some() => {
                let route = Route::with_slot(Slot::for_key(&key), SlotAddr::Master);
                Some(RoutingInfo::SingleNode(
                    SingleNodeRoutingInfo::SpecificNode(route),
                ))
            }
            Servers::Cluster(_) => {
                return Err(Error::Backend {
                    backend: "redis",
                    message: "on a Redis Cluster, only prefixes that start with a namespace \
                              can be deleted"
                        .into(),
                });
            }
        };
        self.with_connection(|c| {
            let mut cursor: u64 = 0;
            let mut removed = 0;
            loop {
                let mut scan = redis::cmd("SCAN");
                scan.arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000);
                let (next, keys): (u64, Vec<Vec<u8>>) = match (&node, &mut *c) {
                    (Some(node), Pooled::Cluster(c)) => {
                        redis::from_redis_value(c.route_command(&scan, node.clone())?)?
                    }
                    _ => scan.query(c.con())?,
                };
                if !keys.is_empty() {
                    removed += redis::cmd("DEL").arg(&keys).query::<u64>(c.con())?;
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
        self.with_connection(|c| redis::cmd("GET").arg(&key).query::<Option<u64>>(c.con()))
            .map(Option::unwrap_or_default)
    }

    fn increment(&self, name: &str) -> Result<u64> {
        let key = self.counter_key(name);
        self.with_connection(|c| redis::cmd("INCR").arg(&key).query(c.con()))
    }

    /// A typed read is one round trip: a script reads the namespace's generation and the
    /// entry together.
    fn resolves_generations(&self) -> bool {
        true
    }

    /// Leases are Redis keys beside their entries, with an expiry (`SET ... NX PX`): a holder
    /// that dies or overruns its lease lets another caller take over.
    fn supports_leases(&self) -> bool {
        true
    }

    fn read_or_lease(&self, key: &[u8], token: u64, lease: Duration) -> Result<Leased> {
        let (token, ms) = (token.to_string(), ttl_ms(lease).to_string());
        let reply: (u8, Option<Vec<u8>>) =
            self.on_entry(&READ_OR_LEASE, key, &[token.as_bytes(), ms.as_bytes()])?;
        Ok(leased(reply))
    }

    fn set_and_release(
        &self,
        key: &[u8],
        value: &[u8],
        ttl: Option<Duration>,
        token: u64,
    ) -> Result<()> {
        let ttl = ttl.map(|t| ttl_ms(t).to_string()).unwrap_or_default();
        let token = token.to_string();
        self.on_entry::<u8>(
            &SET_AND_RELEASE,
            key,
            &[value, ttl.as_bytes(), token.as_bytes()],
        )
        .map(drop)
    }

    fn release_lease(&self, key: &[u8], token: u64) -> Result<()> {
        let token = token.to_string();
        self.on_entry::<u8>(&RELEASE, key, &[token.as_bytes()])
            .map(drop)
    }

    /// Inside a tokio runtime, async calls go over one multiplexed connection.
    #[cfg(feature = "tokio")]
    fn is_async(&self) -> bool {
        tokio::runtime::Handle::try_current().is_ok()
    }

    #[cfg(feature = "tokio")]
    fn get_async<'a>(&'a self, key: &'a [u8]) -> BackendFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            if let Some(current) = redis_keys::current_key(&self.prefix, key) {
                return self.in_current_generation_async(&GET, &current, &[]).await;
            }
            let mut cmd = redis::cmd("GET");
            cmd.arg(self.key(key));
            self.query_async(&cmd).await
        })
    }

    #[cfg(feature = "tokio")]
    fn set_async<'a>(
        &'a self,
        key: &'a [u8],
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> BackendFuture<'a, ()> {
        Box::pin(async move {
            let ttl = ttl.map(|t| ttl_ms(t).to_string()).unwrap_or_default();
            if let Some(current) = redis_keys::current_key(&self.prefix, key) {
                return self
                    .in_current_generation_async(&SET, &current, &[value, ttl.as_bytes()])
                    .await;
            }
            let mut cmd = redis::cmd("SET");
            cmd.arg(self.key(key)).arg(value);
            if !ttl.is_empty() {
                cmd.arg("PX").arg(ttl);
            }
            self.query_async(&cmd).await
        })
    }

    #[cfg(feature = "tokio")]
    fn read_or_lease_async<'a>(
        &'a self,
        key: &'a [u8],
        token: u64,
        lease: Duration,
    ) -> BackendFuture<'a, Leased> {
        Box::pin(async move {
            let (token, ms) = (token.to_string(), ttl_ms(lease).to_string());
            let reply: (u8, Option<Vec<u8>>) = self
                .on_entry_async(&READ_OR_LEASE, key, &[token.as_bytes(), ms.as_bytes()])
                .await?;
            Ok(leased(reply))
        })
    }

    #[cfg(feature = "tokio")]
    fn set_and_release_async<'a>(
        &'a self,
        key: &'a [u8],
        value: &'a [u8],
        ttl: Option<Duration>,
        token: u64,
    ) -> BackendFuture<'a, ()> {
        Box::pin(async move {
            let ttl = ttl.map(|t| ttl_ms(t).to_string()).unwrap_or_default();
            let token = token.to_string();
            self.on_entry_async::<u8>(
                &SET_AND_RELEASE,
                key,
                &[value, ttl.as_bytes(), token.as_bytes()],
            )
            .await
            .map(drop)
        })
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

/// The async connection: one multiplexed connection that every task shares.
#[cfg(feature = "tokio")]
mod aio {
    use std::time::Duration;

    use redis::{AsyncConnectionConfig, Cmd, FromRedisValue, RedisResult};

    use super::Servers;

    /// A multiplexed connection to one server, or the async cluster connection; cheap to
    /// clone (each clone sends over the same connection).
    #[derive(Clone)]
    pub(super) enum Shared {
        One(redis::aio::MultiplexedConnection),
        Cluster(redis::cluster_async::ClusterConnection),
    }

    impl Shared {
        pub async fn query<T: FromRedisValue>(&mut self, cmd: &Cmd) -> RedisResult<T> {
            match self {
                Shared::One(c) => cmd.query_async(c).await,
                Shared::Cluster(c) => cmd.query_async(c).await,
            }
        }
    }

    pub(super) async fn connect(servers: &Servers, timeout: Duration) -> RedisResult<Shared> {
        match servers {
            Servers::One(client) => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout));
                let con = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                Ok(Shared::One(con))
            }
            Servers::Cluster(nodes) => {
                let client = nodes.client(timeout)?;
                Ok(Shared::Cluster(client.get_async_connection().await?))
            }
        }
    }
}
