//! The size limit: the oldest segments, and the keys whose newest value they hold, are
//! evicted until the store fits; nothing evicted comes back.

mod common;

use std::time::{Duration, Instant};

use common::{contents, manual};
use logcache_engine::Store;

#[test]
fn the_oldest_keys_are_evicted_to_stay_under_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let limit = 256 << 10;
    let segment = 8 << 10;
    let opts = manual()
        .max_segment_size(segment)
        .max_disk_bytes(Some(limit))
        .compaction_interval(Duration::from_millis(5));
    let store = Store::open(dir.path(), opts.clone()).unwrap();
    for i in 0..1000u32 {
        store.put(&i.to_be_bytes(), &[7; 200]).unwrap();
    }
    let start = Instant::now();
    while store.stats().disk_bytes + store.stats().index_bytes > limit + segment {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            store.stats()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let stats = store.stats();
    assert!(stats.evictions > 0);
    assert_eq!(stats.keys as u64 + stats.evictions, 1000, "{stats:?}");
    // Least recently stored go first: what is left is the newest keys, without a gap.
    let oldest_kept = (0..1000u32)
        .find(|i| store.contains(&i.to_be_bytes()).unwrap())
        .unwrap();
    assert!(oldest_kept > 0);
    assert!((oldest_kept..1000).all(|i| store.contains(&i.to_be_bytes()).unwrap()));
    let kept = contents(&store);
    drop(store);
    let store = Store::open(dir.path(), manual().max_segment_size(segment)).unwrap();
    assert_eq!(
        contents(&store),
        kept,
        "evicted keys stay gone after reopen"
    );
}

#[test]
fn compact_also_enforces_the_limit_without_the_background_thread_for_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let opts = manual()
        .max_segment_size(4096)
        .max_disk_bytes(Some(16 << 10))
        .compaction_interval(Duration::from_secs(3600));
    let store = Store::open(dir.path(), opts).unwrap();
    for i in 0..400u32 {
        store.put(&i.to_be_bytes(), &[1; 100]).unwrap();
    }
    store.compact().unwrap();
    let stats = store.stats();
    assert!(stats.disk_bytes <= 16 << 10, "{stats:?}");
    assert_eq!(stats.keys as u64 + stats.evictions, 400);
}

/// Blocks the files of `dir` take on the disk, in bytes (a preallocated segment counts whole,
/// a sealed one's given-back tail does not).
fn du(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    // Eviction may delete a file between the listing and its metadata: it then takes nothing.
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.blocks() * 512)
        .sum()
}

#[test]
fn a_one_megabyte_limit_holds_within_ten_percent() {
    let dir = tempfile::tempdir().unwrap();
    let limit = 1_000_000;
    // Default segment size (64 MiB): under a limit, segments follow it.
    let opts = logcache_engine::Options::default()
        .max_disk_bytes(Some(limit))
        .compaction_interval(Duration::from_millis(5));
    let store = Store::open(dir.path(), opts).unwrap();
    let value = [3u8; 1000];
    for i in 0..20_000u32 {
        store.put(&i.to_be_bytes(), &value).unwrap();
    }
    let start = Instant::now();
    while du(dir.path()) > limit + limit / 10 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{} bytes on disk, {:?}",
            du(dir.path()),
            store.stats()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let stats = store.stats();
    assert!(stats.evictions > 15_000, "{stats:?}");
    assert_eq!(
        store.get(&19_999u32.to_be_bytes()).unwrap(),
        Some(value.to_vec())
    );
    drop(store);
    assert!(du(dir.path()) <= limit + limit / 10, "{}", du(dir.path()));
}
