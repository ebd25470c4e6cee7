//! Stampede protection across processes: real processes (this test binary, run again as a
//! child) call one memoized function on one key at once, on a Redis server
//! (`LOGCACHE_REDIS_URL`) and on one disk store, and the body runs once; the holder of the
//! lease killed with SIGKILL mid-body lets another process compute, and every caller gets
//! the value.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use logcache::CacheBuilder;
use logcache::memo::{self, MemoSpec};

const ROLE: &str = "LOGCACHE_STAMPEDE_ROLE";

/// Where the processes of one test meet: a Redis URL and key prefix, or a store directory.
#[derive(Clone)]
enum Place {
    #[cfg(feature = "redis")]
    Redis {
        url: String,
        prefix: String,
    },
    Disk(std::path::PathBuf),
}

/// What a child does: call the memoized function once, print its value. The body appends a
/// byte to `COUNT_FILE`, says that it started, and takes `BODY_MS`.
#[test]
fn child_process_role() {
    let Ok(place) = std::env::var(ROLE) else {
        return; // run as a test of its own: nothing to do
    };
    let body_ms: u64 = std::env::var("BODY_MS").unwrap().parse().unwrap();
    let lease = Duration::from_millis(std::env::var("LEASE_MS").unwrap().parse().unwrap());
    let count_file = std::env::var("COUNT_FILE").unwrap();
    let mut builder = CacheBuilder::new().lease(Some(lease));
    if std::env::var("TIERED").is_ok() {
        // A memory tier in front: leases go to the tier behind it.
        builder = builder.memory_tier(logcache::MemoryLimit::Entries(1000));
    }
    let cache = match place.as_str() {
        #[cfg(feature = "redis")]
        "redis" => builder.backend(
            logcache::RedisBackend::open(&std::env::var("REDIS_URL").unwrap())
                .unwrap()
                .with_prefix(std::env::var("REDIS_PREFIX").unwrap()),
        ),
        "disk" => builder.disk(std::env::var("STORE_DIR").unwrap()),
        other => panic!("{other}"),
    }
    .build()
    .unwrap();
    let spec = MemoSpec::new("stampede::expensive");
    let value: u64 = memo::memoize(&cache, &spec, &("one key",), || {
        let mut count = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&count_file)
            .unwrap();
        count.write_all(b"x").unwrap();
        println!("computing");
        std::thread::sleep(Duration::from_millis(body_ms));
        42
    });
    println!("value {value}");
}

fn spawn(place: &Place, count_file: &Path, body_ms: u64, lease_ms: u64) -> Child {
    spawn_on(place, false, count_file, body_ms, lease_ms)
}

fn spawn_on(place: &Place, tiered: bool, count_file: &Path, body_ms: u64, lease_ms: u64) -> Child {
    let mut command = Command::new(std::env::current_exe().unwrap());
    if tiered {
        command.env("TIERED", "1");
    }
    command
        .args(["--exact", "child_process_role", "--nocapture", "--quiet"])
        .env("COUNT_FILE", count_file)
        .env("BODY_MS", body_ms.to_string())
        .env("LEASE_MS", lease_ms.to_string())
        .stdout(Stdio::piped());
    match place {
        #[cfg(feature = "redis")]
        Place::Redis { url, prefix } => command
            .env(ROLE, "redis")
            .env("REDIS_URL", url)
            .env("REDIS_PREFIX", prefix),
        Place::Disk(dir) => command.env(ROLE, "disk").env("STORE_DIR", dir),
    };
    command.spawn().unwrap()
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

fn bodies(count_file: &Path) -> u64 {
    std::fs::metadata(count_file).map_or(0, |m| m.len())
}

/// Each test's places: a disk store, and a Redis prefix if a server is configured.
fn places(test: &str, dir: &Path) -> Vec<Place> {
    let mut places = vec![Place::Disk(dir.join(format!("store-{test}")))];
    #[cfg(feature = "redis")]
    if let Some(url) = common::redis_url() {
        places.push(Place::Redis {
            url,
            prefix: format!("stampede:{test}:{}:", std::process::id()),
        });
    }
    let _ = test;
    places
}

fn name(place: &Place) -> &'static str {
    match place {
        #[cfg(feature = "redis")]
        Place::Redis { .. } => "redis",
        Place::Disk(_) => "disk",
    }
}

#[test]
fn four_processes_that_miss_at_once_run_the_body_once() {
    let dir = tempfile::tempdir().unwrap();
    let plain = places("four", dir.path()).into_iter().map(|p| (p, false));
    let tiered = places("four-tiered", dir.path())
        .into_iter()
        .map(|p| (p, true));
    for (place, tiered) in plain.chain(tiered) {
        let count = dir
            .path()
            .join(format!("bodies-four-{}-{tiered}", name(&place)));
        let children: Vec<Child> = (0..4)
            .map(|_| spawn_on(&place, tiered, &count, 500, 10_000))
            .collect();
        for child in children {
            let lines = printed(child);
            assert_eq!(
                lines.last().map(String::as_str),
                Some("value 42"),
                "{lines:?}"
            );
        }
        assert_eq!(
            bodies(&count),
            1,
            "{} (memory tier in front: {tiered}): the body ran once for 4 processes",
            name(&place)
        );
    }
}

#[test]
fn a_holder_killed_mid_body_lets_another_process_compute() {
    let dir = tempfile::tempdir().unwrap();
    for place in places("killed", dir.path()) {
        let count = dir.path().join(format!("bodies-killed-{}", name(&place)));
        // The holder: a long body, a lease of 2 s.
        let mut holder = spawn(&place, &count, 60_000, 2_000);
        let mut out = BufReader::new(holder.stdout.take().unwrap());
        let mut line = String::new();
        while !line.starts_with("computing") {
            line.clear();
            let n = out.read_line(&mut line).unwrap();
            assert!(n > 0, "the holder ended without computing");
        }
        // Three more miss on the same key and wait for the holder; then it dies.
        let waiters: Vec<Child> = (0..3).map(|_| spawn(&place, &count, 300, 2_000)).collect();
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
        // The holder, then exactly one of the waiters once the lease was free (Redis: it
        // ran out; disk: the kernel freed it with the process); the other two waited.
        assert_eq!(bodies(&count), 2, "{}", name(&place));
    }
}

#[test]
fn without_a_lease_every_process_computes() {
    let dir = tempfile::tempdir().unwrap();
    #[cfg(feature = "redis")]
    if let Some(url) = common::redis_url() {
        // The control: a lease of 1 ms runs out at once, so with bodies of 500 ms every
        // process computes.
        let place = Place::Redis {
            url,
            prefix: format!("stampede:nolease:{}:", std::process::id()),
        };
        let count = dir.path().join("bodies-nolease");
        let children: Vec<Child> = (0..3).map(|_| spawn(&place, &count, 500, 1)).collect();
        for child in children {
            assert_eq!(printed(child).last().map(String::as_str), Some("value 42"));
        }
        assert_eq!(bodies(&count), 3);
    }
    let _ = dir;
}
