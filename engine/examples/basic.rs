//! The engine on its own: open a store, write and read, see that it persists.
//!
//! ```text
//! cargo run --release -p logcache-engine --example basic [DIR]
//! ```
//! Run it twice: the second run finds what the first one wrote.

use std::time::{Duration, Instant};

use logcache_engine::{Durability, Options, Store, WriteBatch};

fn main() -> Result<(), logcache_engine::Error> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "basic_store".into());
    let opened = Instant::now();
    let store = Store::open(&dir, Options::default().durability(Durability::Flush))?;
    println!(
        "opened {dir} in {:.1?}: {} keys, {} segments",
        opened.elapsed(),
        store.len(),
        store.stats().segments
    );
    if let Some(tail) = store.recovery_report().torn_tail {
        println!(
            "  cut a torn tail of {} bytes after a crash ({})",
            tail.bytes, tail.reason
        );
    }

    let runs = match store.get(b"meta:runs")? {
        Some(v) => u64::from_le_bytes(v.try_into().unwrap_or_default()) + 1,
        None => 1,
    };
    store.put(b"meta:runs", &runs.to_le_bytes())?;
    println!("run number {runs} on this store");

    let n = 100_000u32;
    let started = Instant::now();
    for i in 0..n {
        store.put(
            format!("user:{i:06}").as_bytes(),
            format!("{{\"id\":{i},\"run\":{runs}}}").as_bytes(),
        )?;
    }
    let put_time = started.elapsed();
    let started = Instant::now();
    for i in 0..n {
        let value = store.get(format!("user:{i:06}").as_bytes())?;
        assert!(value.is_some());
    }
    let get_time = started.elapsed();
    println!(
        "{n} puts in {put_time:.1?} ({:.0} ops/s), {n} gets in {get_time:.1?} ({:.0} ops/s)",
        f64::from(n) / put_time.as_secs_f64(),
        f64::from(n) / get_time.as_secs_f64()
    );

    let mut batch = WriteBatch::new();
    batch
        .put(b"account:alice", b"90")
        .put(b"account:bob", b"110")
        .put_with_ttl(b"session:alice", b"token", Duration::from_secs(60));
    store.write_batch(&batch)?;
    println!(
        "atomic batch written; bob has {}",
        String::from_utf8_lossy(&store.get(b"account:bob")?.unwrap_or_default())
    );

    store.sync()?;
    let stats = store.stats();
    println!(
        "{} live keys, {} segments, {:.1} MB on disk ({:.1} MB dead, reclaimable by compaction)",
        stats.keys,
        stats.segments,
        stats.disk_bytes as f64 / 1e6,
        stats.dead_bytes as f64 / 1e6
    );
    store.close()
}
