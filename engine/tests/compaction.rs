//! Compaction and hint files: space is reclaimed, nothing comes back from the dead, reads and
//! writes go on during compaction, and open uses hints (or falls back to scanning).

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{contents, manual, segment_files};
use logcache_engine::{Options, Store};

fn hint_files(dir: &Path) -> Vec<std::path::PathBuf> {
    common::files_with_extension(dir, "hint")
}

fn temp_files(dir: &Path) -> usize {
    fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".tmp")
        })
        .count()
}

/// Waits until `cond` holds, for up to ten seconds.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn compact_reclaims_dead_space_and_keeps_every_live_value() {
    let dir = tempfile::tempdir().unwrap();
    let opts = manual().max_segment_size(4096);
    let store = Store::open(dir.path(), opts.clone()).unwrap();
    let mut model = BTreeMap::new();
    for round in 0..5u32 {
        for k in 0..200u32 {
            if (k + round) % 9 == 0 {
                store.delete(&k.to_le_bytes()).unwrap();
                model.remove(k.to_le_bytes().as_slice());
            } else {
                let v = format!("{k}:{round}").into_bytes();
                store.put(&k.to_le_bytes(), &v).unwrap();
                model.insert(k.to_le_bytes().to_vec(), v);
            }
        }
    }
    let before = store.stats();
    assert!(before.dead_bytes > before.live_bytes);
    let stats = store.compact().unwrap();
    let after = store.stats();
    assert_eq!(after.dead_bytes, 0);
    assert_eq!(after.live_bytes, before.live_bytes);
    assert_eq!(stats.records_copied as usize, model.len());
    assert_eq!(
        stats.tombstones_kept, 0,
        "a full compaction needs no tombstone"
    );
    assert!(stats.segments_in > stats.segments_out);
    assert_eq!(
        stats.bytes_reclaimed,
        stats.bytes_read - stats.bytes_written
    );
    assert!(
        after.disk_bytes < before.disk_bytes / 2,
        "{before:?} -> {after:?}"
    );
    assert_eq!(after.compactions, 1);
    assert_eq!(contents(&store), model);
    assert_eq!(temp_files(dir.path()), 0);

    // A second compaction finds nothing to do.
    let again = store.compact().unwrap();
    assert_eq!(again.segments_in, 0);
    drop(store);

    // A rebuild of the index (after an OS crash) reads every segment from its hint.
    logcache_engine::fuzz::simulate_os_crash(dir.path());
    let store = Store::open(dir.path(), opts).unwrap();
    assert_eq!(contents(&store), model);
    let report = store.recovery_report();
    assert_eq!(
        report.hints_used, report.segments,
        "every compacted segment has a hint"
    );
    assert_eq!(store.stats().dead_bytes, 0);
}

/// Segment A holds `k` among many live keys; segment B holds `k`'s tombstone among many
/// overwritten keys. Automatic compaction by dead ratio picks B alone, so it must keep the
/// tombstone: dropping it would bring `k`'s old value in A back to life on the next open.
#[test]
fn a_deleted_key_does_not_come_back_when_only_its_tombstone_is_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let opts = manual().max_segment_size(8192);
    {
        let store = Store::open(dir.path(), opts.clone()).unwrap();
        store.put(b"k", b"old value").unwrap();
        for i in 0..30u32 {
            store.put(format!("live{i}").as_bytes(), &[1; 40]).unwrap();
        }
        common::fill_active_segment(&store, 8192, b"filler");
        // The next write starts a new segment: B.
        store.delete(b"k").unwrap();
        for _ in 0..30 {
            store.put(b"churn", &[2; 40]).unwrap();
        }
        // Seal B (only sealed segments are compacted): fill it, and write on into C.
        common::fill_active_segment(&store, 8192, b"filler2");
        store.put(b"in C", b"1").unwrap();
        store.delete(b"filler2").unwrap();
    }
    assert_eq!(segment_files(dir.path()).len(), 3);
    let auto = opts
        .clone()
        .auto_compaction(true)
        .compaction_interval(Duration::from_millis(5))
        .compaction_dead_ratio(0.5)
        .compaction_dead_bytes(u64::MAX);
    let store = Store::open(dir.path(), auto).unwrap();
    eventually("a compaction", || store.stats().compactions >= 1);
    assert_eq!(store.get(b"k").unwrap(), None);
    drop(store);
    let files = segment_files(dir.path());
    assert_eq!(files.len(), 3, "A and C stayed, B was rewritten: {files:?}");
    let store = Store::open(dir.path(), opts.clone()).unwrap();
    assert_eq!(store.get(b"k").unwrap(), None, "the deleted key came back");
    assert_eq!(store.get(b"churn").unwrap(), Some(vec![2; 40]));
    assert_eq!(store.len(), 33);
    // A full compaction now drops the tombstone together with the old value.
    let stats = store.compact().unwrap();
    assert_eq!(stats.tombstones_kept, 0);
    drop(store);
    let store = Store::open(dir.path(), opts).unwrap();
    assert_eq!(store.get(b"k").unwrap(), None);
    assert_eq!(store.len(), 33);
}

#[test]
fn an_expired_value_does_not_uncover_an_older_one_after_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let opts = manual().max_segment_size(8192);
    {
        let store = Store::open(dir.path(), opts.clone()).unwrap();
        store.put(b"k", b"forever").unwrap();
        for i in 0..30u32 {
            store.put(format!("live{i}").as_bytes(), &[1; 40]).unwrap();
        }
        common::fill_active_segment(&store, 8192, b"filler");
        store
            .put_with_ttl(b"k", b"briefly", Duration::from_millis(30))
            .unwrap();
        for _ in 0..30 {
            store.put(b"churn", &[2; 40]).unwrap();
        }
        common::fill_active_segment(&store, 8192, b"filler2");
        store.put(b"in C", b"1").unwrap();
        store.delete(b"filler2").unwrap();
    }
    thread::sleep(Duration::from_millis(50));
    let auto = opts
        .clone()
        .auto_compaction(true)
        .compaction_interval(Duration::from_millis(5))
        .compaction_dead_bytes(u64::MAX);
    let store = Store::open(dir.path(), auto).unwrap();
    assert_eq!(store.get(b"k").unwrap(), None);
    eventually("a compaction", || store.stats().compactions >= 1);
    assert_eq!(store.get(b"k").unwrap(), None);
    drop(store);
    let store = Store::open(dir.path(), opts).unwrap();
    assert_eq!(store.get(b"k").unwrap(), None, "the older value came back");
}

#[test]
fn reads_and_writes_go_on_while_compaction_runs_repeatedly() {
    let dir = tempfile::tempdir().unwrap();
    let opts = manual().max_segment_size(8192);
    let store = Arc::new(Store::open(dir.path(), opts.clone()).unwrap());
    const KEYS: u32 = 64;
    // Each value carries its key and a version; versions only grow.
    let value =
        |k: u32, v: u32| format!("{k}:{v:08}:{}", "x".repeat((k % 40) as usize)).into_bytes();
    let version = |bytes: &[u8]| -> (u32, u32) {
        let s = std::str::from_utf8(bytes).unwrap();
        let mut parts = s.split(':');
        (
            parts.next().unwrap().parse().unwrap(),
            parts.next().unwrap().parse().unwrap(),
        )
    };
    for k in 0..KEYS {
        store.put(&k.to_le_bytes(), &value(k, 0)).unwrap();
    }
    let done = Arc::new(AtomicBool::new(false));
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let compactor = {
        let (store, done, runs) = (Arc::clone(&store), Arc::clone(&done), Arc::clone(&runs));
        thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                store.compact().unwrap();
                runs.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (store, done) = (Arc::clone(&store), Arc::clone(&done));
            thread::spawn(move || {
                let mut seen = vec![0u32; KEYS as usize];
                while !done.load(Ordering::Relaxed) {
                    for k in 0..KEYS {
                        let bytes = store.get(&k.to_le_bytes()).unwrap().expect("never deleted");
                        let (key, v) = version(&bytes);
                        assert_eq!(key, k, "a value of another key");
                        assert!(
                            v >= seen[k as usize],
                            "key {k} went back from {} to {v}",
                            seen[k as usize]
                        );
                        seen[k as usize] = v;
                    }
                }
            })
        })
        .collect();
    // At least 300 rounds of writes, and on until compaction has run three times meanwhile.
    let writer = {
        let (store, runs) = (Arc::clone(&store), Arc::clone(&runs));
        thread::spawn(move || {
            let mut v = 0u32;
            while v < 300 || runs.load(Ordering::SeqCst) < 3 {
                v += 1;
                for k in 0..KEYS {
                    store.put(&k.to_le_bytes(), &value(k, v)).unwrap();
                }
            }
            v
        })
    };
    let last = writer.join().unwrap();
    done.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    compactor.join().unwrap();
    let expect: BTreeMap<Vec<u8>, Vec<u8>> = (0..KEYS)
        .map(|k| (k.to_le_bytes().to_vec(), value(k, last)))
        .collect();
    assert_eq!(contents(&store), expect);
    drop(store);
    let store = Store::open(dir.path(), opts).unwrap();
    assert_eq!(contents(&store), expect);
}

#[test]
fn a_compaction_yields_to_durable_writers_and_keeps_every_value() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), manual()).unwrap());
    let value = |k: u32, round: u32| {
        let mut v = format!("{k}:{round}:").into_bytes();
        v.resize(4096, b'a' + (k % 26) as u8);
        v
    };
    let mut expect = BTreeMap::new();
    let mut paused = Duration::ZERO;
    // A durable writer syncs throughout each compaction, which must then pause for it (and
    // sync its output in small steps).
    for round in 0..5u32 {
        // Every key, then half of them again: the segment holds 20 MiB live among dead.
        let writes = (0..5_000u32)
            .map(|k| (k, 2 * round))
            .chain((0..2_500).map(|k| (k, 2 * round + 1)));
        for (k, version) in writes {
            store.put(&k.to_le_bytes(), &value(k, version)).unwrap();
            expect.insert(k.to_le_bytes().to_vec(), value(k, version));
        }
        let done = Arc::new(AtomicBool::new(false));
        let writer = {
            let (store, done) = (Arc::clone(&store), Arc::clone(&done));
            thread::spawn(move || {
                let mut written = Vec::new();
                while written.len() < 2 || !done.load(Ordering::Relaxed) {
                    let key = format!("durable:{round}:{}", written.len()).into_bytes();
                    store.put(&key, b"kept").unwrap();
                    store.sync().unwrap();
                    written.push(key);
                }
                written
            })
        };
        while store.stats().syncs < 2 {
            thread::yield_now();
        }
        let stats = store.compact().unwrap();
        done.store(true, Ordering::Relaxed);
        for key in writer.join().unwrap() {
            expect.insert(key, b"kept".to_vec());
        }
        assert_eq!(contents(&store), expect, "round {round}");
        paused += stats.paused;
        if !paused.is_zero() {
            break;
        }
    }
    assert!(
        !paused.is_zero(),
        "the compaction never paused for the durable writer"
    );
    drop(store);
    let store = Store::open(dir.path(), manual()).unwrap();
    assert_eq!(contents(&store), expect);
}

#[test]
fn open_falls_back_to_scanning_when_a_hint_is_bad_or_missing() {
    let dir = tempfile::tempdir().unwrap();
    let opts = manual().max_segment_size(4096);
    let mut model = BTreeMap::new();
    {
        let store = Store::open(dir.path(), opts.clone()).unwrap();
        for i in 0..1000u32 {
            let (k, v) = ((i % 400).to_le_bytes().to_vec(), i.to_le_bytes().to_vec());
            store.put(&k, &v).unwrap();
            model.insert(k, v);
        }
        // A tombstone in the newest segment makes every segment part of the compaction.
        store.delete(&0u32.to_le_bytes()).unwrap();
        model.remove(0u32.to_le_bytes().as_slice());
        let stats = store.compact().unwrap();
        assert_eq!(stats.segments_out, segment_files(dir.path()).len());
    }
    let hints = hint_files(dir.path());
    assert!(hints.len() >= 2);
    // Damage one hint, delete another.
    let mut bytes = fs::read(&hints[0]).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&hints[0], bytes).unwrap();
    fs::remove_file(&hints[1]).unwrap();
    logcache_engine::fuzz::simulate_os_crash(dir.path());
    let store = Store::open(dir.path(), opts.clone()).unwrap();
    assert_eq!(contents(&store), model);
    let report = store.recovery_report().clone();
    assert_eq!(report.hints_rejected, 1);
    assert_eq!(report.hints_used, report.segments - 2);
    assert!(!hints[0].exists(), "a rejected hint is removed");
    drop(store);
    // The background thread writes the missing hints again.
    let auto = opts
        .clone()
        .auto_compaction(true)
        .compaction_interval(Duration::from_millis(5));
    let store = Store::open(dir.path(), auto).unwrap();
    eventually("hints rewritten", || {
        hint_files(dir.path()).len() == hints.len()
    });
    drop(store);
    logcache_engine::fuzz::simulate_os_crash(dir.path());
    let store = Store::open(dir.path(), opts).unwrap();
    assert_eq!(
        store.recovery_report().hints_used,
        store.recovery_report().segments
    );
    assert_eq!(contents(&store), model);
}

#[test]
fn closing_during_a_background_compaction_leaves_a_consistent_store() {
    for attempt in 0..5u64 {
        let dir = tempfile::tempdir().unwrap();
        let opts = manual().max_segment_size(16 << 10);
        let mut model = BTreeMap::new();
        {
            let store = Store::open(dir.path(), opts.clone()).unwrap();
            for i in 0..20_000u32 {
                let (k, v) = ((i % 3000).to_le_bytes().to_vec(), vec![(i % 256) as u8; 50]);
                store.put(&k, &v).unwrap();
                model.insert(k, v);
            }
        }
        let auto = opts
            .clone()
            .auto_compaction(true)
            .compaction_interval(Duration::from_millis(1))
            .compaction_dead_bytes(1);
        let store = Store::open(dir.path(), auto).unwrap();
        thread::sleep(Duration::from_millis(attempt * 3));
        drop(store);
        let store = Store::open(dir.path(), opts).unwrap();
        assert_eq!(contents(&store), model, "attempt {attempt}");
        assert_eq!(temp_files(dir.path()), 0);
    }
}

#[test]
fn stats_options_and_the_default_background_thread() {
    let dir = tempfile::tempdir().unwrap();
    // Defaults: the background thread runs; with a small segment it compacts on its own.
    let opts = Options::default()
        .max_segment_size(4096)
        .compaction_interval(Duration::from_millis(5));
    let store = Store::open(dir.path(), opts).unwrap();
    for i in 0..2000u32 {
        store.put(&(i % 10).to_le_bytes(), &[7; 100]).unwrap();
    }
    // The dead bytes of every sealed segment are reclaimed, in as many rounds as it takes.
    eventually("automatic compaction", || {
        let s = store.stats();
        s.compactions >= 1 && s.disk_bytes < 2000 * 100
    });
    let stats = store.stats();
    assert_eq!(stats.keys, 10);
    assert_eq!(stats.compaction_errors, 0);
}
