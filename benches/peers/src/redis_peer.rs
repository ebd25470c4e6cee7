//! Redis over loopback as a peer: a `redis-server` of its own per run, in the run's directory.
//!
//! Durability follows Redis' own means: the bulk load is made durable by `SAVE` (an RDB
//! snapshot); the durable writes switch on the append-only file with `appendfsync always`
//! (waiting, untimed, for the rewrite that switching it on starts), after which every write
//! command is fsynced before it is answered; "compaction" is `BGREWRITEAOF`; opening is
//! starting the server and waiting until it has loaded its files.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redis::{Connection, cmd};

use logcache_workload::{Engine, Key};

/// Whether `INFO` output has the line `field:value`.
fn has(info: &str, line: &str) -> bool {
    info.lines().any(|l| l.trim_end() == line)
}

/// A running `redis-server` and a pool of connections to it.
pub struct Redis {
    server: Child,
    client: redis::Client,
    idle: Mutex<Vec<Connection>>,
    aof: std::sync::atomic::AtomicBool,
}

impl Redis {
    fn start(dir: &Path, aof: bool) -> Redis {
        std::fs::create_dir_all(dir).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", if aof { "yes" } else { "no" }])
            .args(["--appendfsync", "always", "--dir"])
            .arg(dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (apt-get install redis-server)");
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/0")).unwrap();
        let redis = Redis {
            server,
            client,
            idle: Mutex::new(Vec::new()),
            aof: aof.into(),
        };
        redis.wait_until(Duration::from_secs(600), |info| has(info, "loading:0"));
        redis
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> T) -> T {
        let pooled = self.idle.lock().pop();
        let mut con = pooled.unwrap_or_else(|| self.client.get_connection().unwrap());
        let out = f(&mut con);
        self.idle.lock().push(con);
        out
    }

    /// Polls `INFO persistence` (connecting as the server comes up) until `done` holds.
    fn wait_until(&self, limit: Duration, done: impl Fn(&str) -> bool) {
        let start = Instant::now();
        loop {
            let info: Option<String> = self
                .client
                .get_connection()
                .ok()
                .and_then(|mut c| cmd("INFO").arg("persistence").query(&mut c).ok());
            if info.as_deref().is_some_and(&done) {
                return;
            }
            assert!(start.elapsed() < limit, "redis-server did not get ready");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn switch_on_aof(&self) {
        if self.aof.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        self.with(|c| {
            cmd("CONFIG")
                .arg("SET")
                .arg("appendonly")
                .arg("yes")
                .query::<()>(c)
        })
        .unwrap();
        self.wait_until(Duration::from_secs(600), |info| {
            has(info, "aof_enabled:1")
                && has(info, "aof_rewrite_in_progress:0")
                && has(info, "aof_rewrite_scheduled:0")
        });
    }
}

impl Engine for Redis {
    fn open(dir: &Path) -> Self {
        let aof = dir.join("appendonlydir").exists();
        Redis::start(dir, aof)
    }
    fn write_batch(&self, items: &[(Key, &[u8])], sync: bool) {
        if sync {
            self.switch_on_aof();
        }
        if items.is_empty() {
            return;
        }
        let mut mset = cmd("MSET");
        for (k, v) in items {
            mset.arg(&k[..]).arg(*v);
        }
        self.with(|c| mset.query::<()>(c)).unwrap();
    }
    fn put(&self, key: &Key, value: &[u8]) {
        self.with(|c| cmd("SET").arg(&key[..]).arg(value).query::<()>(c))
            .unwrap();
    }
    fn put_durable(&self, key: &Key, value: &[u8]) {
        self.switch_on_aof();
        self.put(key, value);
    }
    fn prepare_durable(&self) {
        self.switch_on_aof();
    }
    fn get(&self, key: &Key) -> Option<Vec<u8>> {
        self.with(|c| cmd("GET").arg(&key[..]).query(c)).unwrap()
    }
    fn sync(&self) {
        // With the append-only file on, every write was fsynced before its answer.
        if !self.aof.load(std::sync::atomic::Ordering::SeqCst) {
            self.with(|c| cmd("SAVE").query::<()>(c)).unwrap();
        }
    }
    fn compact(&mut self) -> bool {
        if !self.aof.load(std::sync::atomic::Ordering::SeqCst) {
            return false;
        }
        let idle = |info: &str| {
            has(info, "aof_rewrite_in_progress:0") && has(info, "aof_rewrite_scheduled:0")
        };
        // An automatic rewrite started by the overwrites finishes first.
        self.wait_until(Duration::from_secs(600), idle);
        self.with(|c| cmd("BGREWRITEAOF").query::<()>(c)).unwrap();
        self.wait_until(Duration::from_secs(600), idle);
        true
    }
    fn memory_pid(&self) -> u32 {
        self.server.id()
    }
    fn close(mut self) {
        // SHUTDOWN closes the connection instead of answering.
        let _ = self.with(|c| cmd("SHUTDOWN").query::<()>(c));
        self.server.wait().unwrap();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        // A server left behind by a panic would outlive the run.
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}
