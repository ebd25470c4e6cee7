//! The Redis backend against a real server that this test starts, stops and restarts: a
//! server down at start, a restart mid-run, a second process, and one value encoding shared
//! with the disk backend. Needs `redis-server` on the PATH (Debian's package); without it the
//! tests say so and skip, except under CI, where they fail.
#![cfg(feature = "redis")]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use logcache::memo::{self, MemoSpec};
use logcache::{Backend, Cache, CacheBuilder, DiskBackend, Error, RedisBackend};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct UserDetail {
    name: String,
    age: u8,
}

/// A redis-server of this test's own, on a free loopback port, persistence off.
struct Server {
    port: u16,
    child: Option<Child>,
}

fn redis_server_available() -> bool {
    let found = Command::new("redis-server")
        .arg("--version")
        .output()
        .is_ok();
    if !found {
        let why = "redis-server is not installed: the Redis fault tests are NOT run";
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{why} (CI=true)"
        );
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
    }
    found
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Server {
    fn on(port: u16) -> Server {
        let mut s = Server { port, child: None };
        s.start();
        s
    }

    fn start(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn cache(url: &str) -> Cache {
    let backend = RedisBackend::open(url)
        .unwrap()
        .with_timeout(Duration::from_millis(500))
        .with_prefix("faults:");
    CacheBuilder::new().backend(backend).build().unwrap()
}

fn eventually(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_server_down_at_start_gives_typed_errors_then_the_cache_recovers_on_its_own() {
    if !redis_server_available() {
        return;
    }
    let port = free_port();
    let cache = cache(&format!("redis://127.0.0.1:{port}/0"));
    assert!(matches!(
        cache.set("k", &1u8),
        Err(Error::Backend {
            backend: "redis",
            ..
        })
    ));
    assert!(matches!(cache.get::<u8>("k"), Err(Error::Backend { .. })));
    // A memoized function still returns its value; the failures are counted.
    let spec = MemoSpec::new("redis_faults::double");
    let v: u32 = memo::memoize(&cache, &spec, &(21u32,), || 42);
    assert_eq!(v, 42);
    assert!(cache.stats().total.errors >= 3);

    let _server = Server::on(port);
    eventually("the cache to reach the server", || {
        cache.set("k", &1u8).is_ok()
    });
    assert_eq!(cache.get::<u8>("k").unwrap(), Some(1));
}

#[test]
fn a_server_restart_mid_run_is_survived() {
    if !redis_server_available() {
        return;
    }
    let mut server = Server::on(free_port());
    let cache = cache(&server.url());
    cache.set("before", &jason()).unwrap();
    assert_eq!(cache.get::<UserDetail>("before").unwrap(), Some(jason()));
    server.kill();
    assert!(matches!(
        cache.get::<UserDetail>("before"),
        Err(Error::Backend { .. })
    ));
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let computed = cache
        .get_or_insert_with("during", || {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            7u32
        })
        .unwrap();
    assert_eq!(computed, 7, "not strict: computed despite the failure");
    server.start();
    eventually("the pool to reconnect", || cache.set("after", &2u8).is_ok());
    assert_eq!(cache.get::<u8>("after").unwrap(), Some(2));
    // Persistence is off: what was stored before the restart is gone, and reads as a miss.
    assert_eq!(cache.get::<UserDetail>("before").unwrap(), None);
}

#[test]
fn a_second_process_sees_what_the_first_wrote() {
    if !redis_server_available() {
        return;
    }
    let server = Server::on(free_port());
    let cache = cache(&server.url());
    cache.set("shared", &jason()).unwrap();
    cache.namespace("ns").clear().unwrap();
    // Another process (redis-cli) reads the raw entry under the cache's prefix.
    let out = Command::new("redis-cli")
        .args([
            "-p",
            &server.port.to_string(),
            "--scan",
            "--pattern",
            "faults:*",
        ])
        .output();
    let Ok(out) = out else {
        panic!("redis-cli is part of the redis-server package and must be installed");
    };
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.lines().filter(|l| l.starts_with("faults:")).count() >= 2,
        "{listed}"
    );
    // And a separate cache handle, as another process would build, reads the typed value.
    let other = self::cache(&server.url());
    assert_eq!(other.get::<UserDetail>("shared").unwrap(), Some(jason()));
}

#[test]
fn disk_and_redis_store_the_same_bytes() {
    if !redis_server_available() {
        return;
    }
    let server = Server::on(free_port());
    let dir = tempfile::tempdir().unwrap();
    let disk = CacheBuilder::new().disk(dir.path()).build().unwrap();
    let redis = cache(&server.url());
    disk.set("user:jason", &jason()).unwrap();
    redis.set("user:jason", &jason()).unwrap();
    drop(disk);
    let store = DiskBackend::open(dir.path(), logcache::engine::Options::default()).unwrap();
    let keys: Vec<Vec<u8>> = store.store().keys().collect();
    assert_eq!(keys.len(), 1);
    let disk_bytes = store.get(&keys[0]).unwrap().unwrap();
    let raw = RedisBackend::open(&server.url())
        .unwrap()
        .with_prefix("faults:");
    assert_eq!(
        raw.get(&keys[0]).unwrap(),
        Some(disk_bytes),
        "one key and value encoding"
    );
}

fn jason() -> UserDetail {
    UserDetail {
        name: "Jason".into(),
        age: 25,
    }
}

/// Calls of each command the server ran since the last `CONFIG RESETSTAT` (commands that
/// scripts ran included), from `INFO commandstats`.
fn command_calls(con: &mut redis::Connection) -> std::collections::HashMap<String, u64> {
    let info: String = redis::cmd("INFO").arg("commandstats").query(con).unwrap();
    info.lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_string(), calls))
        })
        .collect()
}

#[test]
fn a_typed_get_or_set_is_one_round_trip_and_a_memoized_miss_two() {
    if !redis_server_available() {
        return;
    }
    let server = Server::on(free_port());
    let cache = cache(&server.url());
    let mut admin = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    // Loads the scripts and opens a connection.
    cache.set("warm", &0u8).unwrap();
    cache.get::<u8>("warm").unwrap();
    let spec = MemoSpec::new("redis_faults::square");
    let _: u64 = memo::memoize(&cache, &spec, &(0u64,), || 0);
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut admin)
        .unwrap();

    for i in 0..50u64 {
        cache.set(&i, &jason()).unwrap();
    }
    for i in 0..50u64 {
        assert_eq!(cache.get::<UserDetail>(&i).unwrap(), Some(jason()));
    }
    for i in 1..=20u64 {
        let v: u64 = memo::memoize(&cache, &spec, &(i,), || i * i); // a miss
        let again: u64 = memo::memoize(&cache, &spec, &(i,), || unreachable!()); // a hit
        assert_eq!((v, again), (i * i, i * i));
    }
    let calls = command_calls(&mut admin);
    // One script per operation: 50 sets and 50 gets, then 20 misses (a read that takes the
    // key's lease, then a write that gives it back) and 20 hits. Inside them: a set reads the
    // generation counter and writes (GET, SET); a get reads the counter and the entry (2
    // GETs); a miss reads both and takes the lease (2 GETs, SET NX), then reads the counter,
    // writes, and reads and deletes the lease (2 GETs, SET, DEL); a hit, 2 GETs. Nothing
    // else: no command of the cache reads a counter on its own.
    assert_eq!(
        calls.get("evalsha"),
        Some(&(50 + 50 + 20 * 2 + 20)),
        "{calls:?}"
    );
    assert_eq!(
        calls.get("get"),
        Some(&(50 + 50 * 2 + 20 * 4 + 20 * 2)),
        "{calls:?}"
    );
    assert_eq!(calls.get("set"), Some(&(50 + 20 * 2)), "{calls:?}");
    assert_eq!(calls.get("del"), Some(&20), "{calls:?}");
    let others: Vec<_> = calls
        .keys()
        .filter(|c| {
            !["evalsha", "get", "set", "del", "config|resetstat", "info"].contains(&c.as_str())
        })
        .collect();
    assert!(others.is_empty(), "{calls:?}");
}

#[test]
fn generations_of_every_width_are_found_cleared_and_vacuumed() {
    if !redis_server_available() {
        return;
    }
    let server = Server::on(free_port());
    let cache = cache(&server.url()).namespace("widths");
    let mut admin = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    cache.clear().unwrap();
    let counters: Vec<Vec<u8>> = redis::cmd("KEYS")
        .arg("faults:*counter:ns:widths")
        .query(&mut admin)
        .unwrap();
    let [counter] = &counters[..] else {
        panic!("one counter: {counters:?}")
    };
    // Each width of a MessagePack unsigned integer, at both of its ends.
    let generations = [
        1u64,
        127,
        128,
        255,
        256,
        65_535,
        65_536,
        u64::from(u32::MAX),
        1 << 32,
        1 << 40,
    ];
    // The tag the counter's key holds; entries of the namespace carry the same.
    let tagged = counter[..=counter.iter().position(|&b| b == b'}').unwrap()].to_vec();
    for (i, &generation) in generations.iter().enumerate() {
        let _: () = redis::cmd("SET")
            .arg(counter)
            .arg(generation - 1)
            .query(&mut admin)
            .unwrap();
        cache.clear().unwrap(); // INCR: now `generation`
        assert_eq!(
            cache.get::<u64>("k").unwrap(),
            None,
            "generation {generation}"
        );
        cache.set("k", &generation).unwrap();
        assert_eq!(cache.get::<u64>("k").unwrap(), Some(generation));
        // The script wrote the generation as the cache does: the shortest MessagePack
        // unsigned integer, between the namespace's name and the key ("widths", "k").
        let mut key = tagged.clone();
        key.extend_from_slice(b"\xa6widths");
        key.extend_from_slice(&match generation {
            0..=127 => vec![generation as u8],
            128..=255 => vec![0xcc, generation as u8],
            256..=65_535 => [&[0xcd][..], &(generation as u16).to_be_bytes()].concat(),
            65_536..=0xffff_ffff => [&[0xce][..], &(generation as u32).to_be_bytes()].concat(),
            _ => [&[0xcf][..], &generation.to_be_bytes()].concat(),
        });
        key.extend_from_slice(b"\xa1k");
        let exists: u64 = redis::cmd("EXISTS").arg(&key).query(&mut admin).unwrap();
        assert_eq!(exists, 1, "generation {generation}: {key:x?}");
        if generation < 300 {
            // The cache's own key for an older generation finds what a script stored.
            assert_eq!(cache.vacuum().unwrap(), u64::from(i > 0), "{generation}");
        }
    }
    assert_eq!(cache.get::<u64>("k").unwrap(), Some(1 << 40));
}

#[test]
fn a_server_that_never_answers_costs_a_memoized_call_one_timeout() {
    // A listener that accepts connections and never replies: counts them, holds them open.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    {
        let accepted = std::sync::Arc::clone(&accepted);
        thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming().flatten() {
                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                held.push(stream);
            }
        });
    }
    let cache = CacheBuilder::new()
        .backend(
            RedisBackend::open(&format!("redis://127.0.0.1:{port}/0"))
                .unwrap()
                .with_timeout(Duration::from_millis(200)),
        )
        .build()
        .unwrap();
    let spec = MemoSpec::new("redis_faults::silent");
    let v: u32 = memo::memoize(&cache, &spec, &(1u32,), || 7);
    assert_eq!(v, 7, "computed despite the silent server");
    // One wait on the server: the read timed out, and the value was not stored afterwards
    // (which would have connected, and waited, again).
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(cache.stats().total.errors, 1);
    // The connection that timed out is not reused (its late reply would answer the next
    // command): the next call connects again.
    let v: u32 = memo::memoize(&cache, &spec, &(2u32,), || 8);
    assert_eq!(v, 8);
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
}

/// How many connections the server has accepted so far.
fn connections_received(con: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO").arg("stats").query(con).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("total_connections_received:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn blocking_calls_reuse_pooled_connections() {
    if !redis_server_available() {
        return;
    }
    let server = Server::on(free_port());
    let mut probe = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let before = connections_received(&mut probe);
    let cache = cache(&server.url());
    thread::scope(|s| {
        for t in 0..4u32 {
            let cache = &cache;
            s.spawn(move || {
                for i in 0..200u32 {
                    cache.set(&(t, i), &i).unwrap();
                    assert_eq!(cache.get::<u32>(&(t, i)).unwrap(), Some(i));
                }
            });
        }
    });
    let made = connections_received(&mut probe) - before;
    assert!((1..=4).contains(&made), "at most one per thread: {made}");
    for i in 0..200u32 {
        assert_eq!(cache.get::<u32>(&(0u32, i)).unwrap(), Some(i));
    }
    assert_eq!(
        connections_received(&mut probe) - before,
        made,
        "a kept connection served them"
    );
}
