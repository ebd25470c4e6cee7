//! Stampede protection across processes on a real Redis server (`LOGCACHE_REDIS_URL`): real
//! processes (this test binary, run again as a child) call one memoized function on one key
//! at once, and the body runs once; the holder of the lease killed with SIGKILL mid-body lets
//! another process compute, and every caller gets the value.
#![cfg(feature = "redis")]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use logcache::memo::{self, MemoSpec};
use logcache::{CacheBuilder, RedisBackend};

const ROLE: &str = "LOGCACHE_STAMPEDE_ROLE";

/// What a child does: call the memoized function once, print its value. The body counts its
/// runs in Redis, says that it started, and takes `BODY_MS`.
#[test]
fn child_process_role() {
    let Ok(prefix) = std::env::var(ROLE) else {
        return; // run as a test of its own: nothing to do
    };
    let url = std::env::var("LOGCACHE_REDIS_URL").unwrap();
    let body_ms: u64 = std::env::var("BODY_MS").unwrap().parse().unwrap();
    let lease_ms: u64 = std::env::var("LEASE_MS").unwrap().parse().unwrap();
    let cache = CacheBuilder::new()
        .backend(
            RedisBackend::open(&url)
                .unwrap()
                .with_prefix(prefix.clone()),
        )
        .lease(Some(Duration::from_millis(lease_ms)))
        .build()
        .unwrap();
    let spec = MemoSpec::new("redis_stampede::expensive");
    let value: u64 = memo::memoize(&cache, &spec, &("one key",), || {
        let mut con = redis::Client::open(url.as_str())
            .unwrap()
            .get_connection()
            .unwrap();
        let _: u64 = redis::cmd("INCR")
            .arg(format!("{prefix}bodies"))
            .query(&mut con)
            .unwrap();
        println!("computing");
        std::thread::sleep(Duration::from_millis(body_ms));
        42
    });
    println!("value {value}");
}

fn spawn(url: &str, prefix: &str, body_ms: u64, lease_ms: u64) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_process_role", "--nocapture", "--quiet"])
        .env(ROLE, prefix)
        .env("LOGCACHE_REDIS_URL", url)
        .env("BODY_MS", body_ms.to_string())
        .env("LEASE_MS", lease_ms.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The lines a child printed that the test cares about.
fn printed(child: Child) -> Vec<String> {
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("value") || l.starts_with("computing"))
        .map(str::to_string)
        .collect()
}

fn bodies(url: &str, prefix: &str) -> u64 {
    let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
    redis::cmd("GET")
        .arg(format!("{prefix}bodies"))
        .query::<Option<u64>>(&mut con)
        .unwrap()
        .unwrap_or(0)
}

fn unique_prefix(test: &str) -> String {
    format!("stampede:{test}:{}:", std::process::id())
}

#[test]
fn four_processes_that_miss_at_once_run_the_body_once() {
    let Some(url) = common::redis_url() else {
        return;
    };
    let prefix = unique_prefix("four");
    let children: Vec<Child> = (0..4).map(|_| spawn(&url, &prefix, 500, 10_000)).collect();
    for child in children {
        let lines = printed(child);
        assert_eq!(
            lines.last().map(String::as_str),
            Some("value 42"),
            "{lines:?}"
        );
    }
    assert_eq!(
        bodies(&url, &prefix),
        1,
        "the body ran once for four processes"
    );
}

#[test]
fn a_holder_killed_mid_body_lets_another_process_compute() {
    let Some(url) = common::redis_url() else {
        return;
    };
    let prefix = unique_prefix("killed");
    // The holder: a long body, a lease of 2 s.
    let mut holder = spawn(&url, &prefix, 60_000, 2_000);
    let mut out = BufReader::new(holder.stdout.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("computing") {
        line.clear();
        let n = out.read_line(&mut line).unwrap();
        assert!(n > 0, "the holder ended without computing");
    }
    // Three more miss on the same key and wait for the holder; then it dies.
    let waiters: Vec<Child> = (0..3).map(|_| spawn(&url, &prefix, 300, 2_000)).collect();
    std::thread::sleep(Duration::from_millis(300));
    holder.kill().unwrap();
    holder.wait().unwrap();
    for child in waiters {
        let lines = printed(child);
        assert_eq!(
            lines.last().map(String::as_str),
            Some("value 42"),
            "{lines:?}"
        );
    }
    // The holder, then exactly one of the waiters once the lease ran out; the other two
    // waited for its value.
    assert_eq!(bodies(&url, &prefix), 2);
}

#[test]
fn without_a_lease_every_process_computes() {
    let Some(url) = common::redis_url() else {
        return;
    };
    let prefix = unique_prefix("nolease");
    // A lease of 0 ms expires at once (SET PX needs at least 1 ms, so each holds it a
    // millisecond): with bodies of 500 ms, every process computes.
    let children: Vec<Child> = (0..3).map(|_| spawn(&url, &prefix, 500, 1)).collect();
    for child in children {
        assert_eq!(printed(child).last().map(String::as_str), Some("value 42"));
    }
    assert_eq!(
        bodies(&url, &prefix),
        3,
        "the control: without a lease, each computes"
    );
}
