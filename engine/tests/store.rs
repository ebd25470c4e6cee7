//! Behaviour of the public `Store` API: reads, writes, persistence, limits, locking, bad input.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use common::{contents, segment_files};
use logcache_engine::{Durability, Error, FORMAT_VERSION, Options, Store, WriteBatch};

fn open(dir: &std::path::Path) -> Store {
    Store::open(dir, common::manual()).unwrap()
}

#[test]
fn put_get_delete_contains_len_keys() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert!(store.is_empty());
    store.put(b"a", b"1").unwrap();
    store.put(b"b", b"2").unwrap();
    store.put(b"a", b"3").unwrap();
    assert_eq!(store.get(b"a").unwrap(), Some(b"3".to_vec()));
    assert_eq!(store.get(b"missing").unwrap(), None);
    assert!(store.contains(b"b").unwrap());
    assert!(!store.contains(b"missing").unwrap());
    assert_eq!(store.len(), 2);
    let mut keys: Vec<_> = store.keys().collect();
    keys.sort();
    assert_eq!(keys, vec![b"a".to_vec(), b"b".to_vec()]);
    assert!(store.delete(b"a").unwrap());
    assert!(!store.delete(b"a").unwrap(), "second delete finds nothing");
    assert!(!store.delete(b"never").unwrap());
    assert_eq!(store.get(b"a").unwrap(), None);
    assert_eq!(store.len(), 1);
}

#[test]
fn empty_keys_and_values_binary_keys_work() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.put(b"", b"empty key").unwrap();
    store.put(b"empty value", b"").unwrap();
    store.put(&[0, 255, 0, 10], b"binary").unwrap();
    store.put("ключ 🔑".as_bytes(), b"unicode").unwrap();
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.get(b"").unwrap(), Some(b"empty key".to_vec()));
    assert_eq!(store.get(b"empty value").unwrap(), Some(Vec::new()));
    assert_eq!(
        store.get(&[0, 255, 0, 10]).unwrap(),
        Some(b"binary".to_vec())
    );
    assert_eq!(
        store.get("ключ 🔑".as_bytes()).unwrap(),
        Some(b"unicode".to_vec())
    );
}

#[test]
fn contents_survive_reopen_in_every_durability_mode() {
    for durability in [Durability::None, Durability::Flush, Durability::Sync] {
        let dir = tempfile::tempdir().unwrap();
        let opts = common::manual()
            .durability(durability)
            .max_segment_size(1024);
        let mut model = BTreeMap::new();
        {
            let store = Store::open(dir.path(), opts.clone()).unwrap();
            for i in 0..300u32 {
                let key = format!("key{}", i % 70).into_bytes();
                if i % 7 == 3 {
                    store.delete(&key).unwrap();
                    model.remove(&key);
                } else {
                    let value = format!("value {i}").repeat(i as usize % 5).into_bytes();
                    store.put(&key, &value).unwrap();
                    model.insert(key, value);
                }
            }
            assert_eq!(contents(&store), model);
            store.close().unwrap();
        }
        assert!(segment_files(dir.path()).len() > 3, "segments rotated");
        let store = Store::open(dir.path(), opts).unwrap();
        assert_eq!(contents(&store), model, "{durability:?}");
        assert_eq!(store.recovery_report().torn_tail, None);
    }
}

#[test]
fn reads_see_writes_at_once_across_rotation_and_buffer() {
    let dir = tempfile::tempdir().unwrap();
    let opts = common::manual()
        .durability(Durability::None)
        .max_segment_size(300);
    let store = Store::open(dir.path(), opts).unwrap();
    for i in 0..200u32 {
        let key = i.to_le_bytes();
        store.put(&key, &[i as u8; 40]).unwrap();
        assert_eq!(store.get(&key).unwrap(), Some(vec![i as u8; 40]));
        if i > 0 {
            let prev = (i - 1).to_le_bytes();
            assert_eq!(store.get(&prev).unwrap(), Some(vec![(i - 1) as u8; 40]));
        }
    }
}

#[test]
fn opening_an_existing_store_writes_nothing_until_the_first_write() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store.put(b"k", b"v").unwrap();
    }
    let before = segment_files(dir.path());
    for _ in 0..3 {
        let store = open(dir.path());
        assert_eq!(store.get(b"k").unwrap(), Some(b"v".to_vec()));
    }
    assert_eq!(segment_files(dir.path()), before);
}

#[test]
fn ttl_entries_expire() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .put_with_ttl(b"short", b"v", Duration::from_millis(1000))
        .unwrap();
    store
        .put_with_ttl(b"long", b"v", Duration::from_secs(3600))
        .unwrap();
    store.put_expiring_at(b"past", b"v", 1).unwrap();
    assert_eq!(store.get(b"past").unwrap(), None);
    assert!(!store.contains(b"past").unwrap());
    assert_eq!(store.get(b"short").unwrap(), Some(b"v".to_vec()));
    assert_eq!(store.len(), 2);
    thread::sleep(Duration::from_millis(1100));
    assert_eq!(store.get(b"short").unwrap(), None);
    assert!(!store.contains(b"short").unwrap());
    assert_eq!(store.len(), 1);
    assert_eq!(store.keys().collect::<Vec<_>>(), vec![b"long".to_vec()]);
    assert!(
        !store.delete(b"short").unwrap(),
        "an expired key was not live"
    );
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.get(b"short").unwrap(), None);
    assert_eq!(store.get(b"long").unwrap(), Some(b"v".to_vec()));
    // An expired record hides older values of its key after reopen too.
    store.put(b"k", b"old").unwrap();
    store.put_expiring_at(b"k", b"new", 1).unwrap();
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.get(b"k").unwrap(), None);
}

#[test]
fn write_batch_is_applied_in_order_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.put(b"gone", b"x").unwrap();
    let mut batch = WriteBatch::new();
    batch
        .put(b"a", b"1")
        .put(b"b", b"2")
        .delete(b"gone")
        .put(b"a", b"3")
        .delete(b"b")
        .put_with_ttl(b"t", b"4", Duration::from_secs(60));
    assert_eq!(batch.len(), 6);
    store.write_batch(&batch).unwrap();
    store.write_batch(&WriteBatch::new()).unwrap();
    let expect: BTreeMap<Vec<u8>, Vec<u8>> = [
        (b"a".to_vec(), b"3".to_vec()),
        (b"t".to_vec(), b"4".to_vec()),
    ]
    .into_iter()
    .collect();
    assert_eq!(contents(&store), expect);
    drop(store);
    assert_eq!(contents(&open(dir.path())), expect);
}

#[test]
fn a_batch_larger_than_a_segment_gets_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let opts = common::manual().max_segment_size(256);
    let store = Store::open(dir.path(), opts.clone()).unwrap();
    store.put(b"first", b"x").unwrap();
    let mut batch = WriteBatch::new();
    for i in 0..20u8 {
        batch.put(&[i], &[i; 50]);
    }
    store.write_batch(&batch).unwrap();
    store.put(b"after", b"y").unwrap();
    drop(store);
    let store = Store::open(dir.path(), opts).unwrap();
    assert_eq!(store.len(), 22);
    assert_eq!(store.get(&[19]).unwrap(), Some(vec![19; 50]));
    assert_eq!(segment_files(dir.path()).len(), 3);
}

#[test]
fn oversized_keys_and_values_are_refused_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let opts = common::manual().max_key_size(8).max_value_size(16);
    let store = Store::open(dir.path(), opts).unwrap();
    store.put(b"kept", b"value").unwrap();
    assert!(matches!(
        store.put(b"123456789", b"v"),
        Err(Error::KeyTooLarge { len: 9, max: 8 })
    ));
    assert!(matches!(
        store.put(b"k", &[0; 17]),
        Err(Error::ValueTooLarge { len: 17, max: 16 })
    ));
    assert!(matches!(
        store.delete(b"123456789"),
        Err(Error::KeyTooLarge { .. })
    ));
    let mut batch = WriteBatch::new();
    batch.put(b"ok", b"ok").put(b"k", &[0; 17]);
    assert!(matches!(
        store.write_batch(&batch),
        Err(Error::ValueTooLarge { .. })
    ));
    assert_eq!(
        store.get(b"ok").unwrap(),
        None,
        "a refused batch writes nothing"
    );
    assert_eq!(store.get(b"kept").unwrap(), Some(b"value".to_vec()));
}

#[test]
fn invalid_options_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = Store::open(dir.path(), common::manual().max_segment_size(10)).unwrap_err();
    assert!(matches!(err, Error::InvalidOptions(_)), "{err}");
}

#[test]
fn two_opens_in_one_process_share_the_store_unless_exclusive() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path());
    a.put(b"k", b"v").unwrap();
    let b = Store::open(dir.path(), common::manual()).unwrap();
    assert_eq!(b.get(b"k").unwrap(), Some(b"v".to_vec()));
    b.put(b"k", b"from b").unwrap();
    assert_eq!(a.get(b"k").unwrap(), Some(b"from b".to_vec()));
    let err = Store::open(dir.path(), common::manual().exclusive(true)).unwrap_err();
    assert!(matches!(err, Error::Locked(_)), "{err}");
    drop(a);
    drop(b);
    let only = Store::open(dir.path(), common::manual().exclusive(true)).unwrap();
    assert_eq!(only.get(b"k").unwrap(), Some(b"from b".to_vec()));
    let err = Store::open(dir.path(), common::manual()).unwrap_err();
    assert!(
        matches!(err, Error::Locked(_)),
        "an exclusive store keeps the others out"
    );
}

#[test]
fn a_file_where_the_directory_should_be_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    fs::write(&file, b"not a store").unwrap();
    assert!(matches!(
        Store::open(&file, common::manual()),
        Err(Error::NotADirectory(_))
    ));
}

#[test]
fn unknown_files_are_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("notes.txt"), b"mine").unwrap();
    fs::write(dir.path().join("12.data.bak"), b"mine too").unwrap();
    let store = open(dir.path());
    store.put(b"k", b"v").unwrap();
    drop(store);
    drop(open(dir.path()));
    assert_eq!(fs::read(dir.path().join("notes.txt")).unwrap(), b"mine");
    assert_eq!(
        fs::read(dir.path().join("12.data.bak")).unwrap(),
        b"mine too"
    );
}

/// Writes a store with two segments and returns its directory.
fn two_segment_store() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let opts = common::manual().max_segment_size(200);
    let store = Store::open(dir.path(), opts).unwrap();
    for i in 0..6u8 {
        store.put(&[b'k', i], &[i; 40]).unwrap();
    }
    drop(store);
    assert!(segment_files(dir.path()).len() >= 2);
    // The damage the tests do is found when the index is rebuilt, as after an OS crash.
    logcache_engine::fuzz::simulate_os_crash(dir.path());
    dir
}

#[test]
fn a_segment_with_a_newer_format_version_is_refused() {
    let dir = two_segment_store();
    let first = segment_files(dir.path())[0].clone();
    let mut bytes = fs::read(&first).unwrap();
    bytes[5..7].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    let crc = crc32(&bytes[..16]);
    bytes[16..20].copy_from_slice(&crc.to_le_bytes());
    fs::write(&first, &bytes).unwrap();
    // And a newest segment whose creation a crash cut short (header still zeros), which an
    // open that goes ahead removes.
    fs::write(dir.path().join("0000000100000000.data"), vec![0u8; 4096]).unwrap();
    let before = directory(dir.path());
    let err = Store::open(dir.path(), common::manual()).unwrap_err();
    assert!(
        matches!(err, Error::UnsupportedVersion { found, supported, .. } if found == FORMAT_VERSION + 1 && supported == FORMAT_VERSION),
        "{err}"
    );
    assert_eq!(
        directory(dir.path()),
        before,
        "a refused open changes nothing"
    );
}

/// Every file of `dir` with its bytes, by name.
fn directory(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn a_segment_with_a_foreign_magic_is_damage_skipped_or_refused_when_strict() {
    let dir = two_segment_store();
    let first = segment_files(dir.path())[0].clone();
    let mut bytes = fs::read(&first).unwrap();
    bytes[..5].copy_from_slice(b"NOTUS");
    fs::write(&first, &bytes).unwrap();
    let err = Store::open(dir.path(), common::manual().strict(true)).unwrap_err();
    assert!(matches!(err, Error::Corrupt { offset: 0, .. }), "{err}");
    // The records carry their own checksums: they are read without the header.
    let store = Store::open(dir.path(), common::manual()).unwrap();
    let damaged = &store.recovery_report().damaged;
    assert_eq!(damaged.len(), 1);
    assert_eq!(
        (damaged[0].offset, damaged[0].reason),
        (0, "file header damaged")
    );
    assert_eq!(store.len(), 6, "every record is read");
}

#[test]
fn corruption_in_a_sealed_segment_is_reported_with_segment_and_offset() {
    let dir = two_segment_store();
    let first = segment_files(dir.path())[0].clone();
    let id = common::segment_id(&first);
    let mut bytes = fs::read(&first).unwrap();
    // Second record: header (20, padded to 24) + one record (21 + 2 + 40, padded to 64).
    let second = 24 + 64;
    bytes[second + 30] ^= 0x01;
    fs::write(&first, &bytes).unwrap();
    let before = directory(dir.path());
    match Store::open(dir.path(), common::manual().strict(true)) {
        Err(Error::Corrupt {
            segment,
            offset,
            reason,
        }) => {
            assert_eq!((segment, offset), (id, second as u64));
            assert_eq!(reason, "checksum mismatch");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(
        directory(dir.path()),
        before,
        "nothing is repaired behind the user's back"
    );
    let store = Store::open(dir.path(), common::manual()).unwrap();
    let damaged = &store.recovery_report().damaged;
    assert_eq!(damaged.len(), 1);
    assert_eq!((damaged[0].segment, damaged[0].offset), (id, second as u64));
    assert_eq!(damaged[0].reason, "checksum mismatch");
    assert_eq!(
        store.len(),
        5,
        "the damaged record is lost (none follows it in its segment)"
    );
    drop(store);
    let mut after = fs::read(&first).unwrap();
    after.truncate(bytes.len());
    assert_eq!(after, bytes, "the damaged bytes are left in place");
}

#[test]
fn corruption_after_open_is_a_lost_entry_never_a_wrong_value() {
    for strict in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), common::manual().strict(strict)).unwrap();
        store.put(b"key", b"value").unwrap();
        store.put(b"other", b"intact").unwrap();
        let seg = segment_files(dir.path())[0].clone();
        let mut bytes = fs::read(&seg).unwrap();
        // The last byte of the value, read through the store's map of the file.
        bytes[24 + 21 + 3 + 4] ^= 0xff;
        fs::write(&seg, &bytes).unwrap();
        if strict {
            assert!(matches!(store.get(b"key"), Err(Error::Corrupt { .. })));
        } else {
            assert_eq!(store.get(b"key").unwrap(), None);
            assert!(!store.contains(b"key").unwrap());
            assert_eq!(store.stats().damaged_reads, 2);
        }
        assert_eq!(
            store.get(b"other").unwrap().as_deref(),
            Some(&b"intact"[..])
        );
    }
}

#[test]
fn stats_count_live_and_dead_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.put(b"a", &[0; 100]).unwrap();
    store.put(b"a", &[1; 100]).unwrap();
    store.put(b"b", &[2; 100]).unwrap();
    store.delete(b"b").unwrap();
    // Records are padded to multiples of 8 bytes.
    let record = (21 + 1 + 100_u64).next_multiple_of(8);
    let tombstone = (21 + 1_u64).next_multiple_of(8);
    let stats = store.stats();
    assert_eq!(stats.keys, 1);
    assert_eq!(stats.segments, 1);
    assert_eq!(stats.live_bytes, record);
    assert_eq!(stats.dead_bytes, 2 * record + tombstone);
    assert_eq!(
        stats.disk_bytes,
        Options::default().max_segment_size,
        "the segment written to is reserved whole"
    );
    drop(store);
    let reopened = open(dir.path()).stats();
    assert_eq!(reopened, stats, "the same figures are rebuilt on open");
}

#[test]
fn readers_and_writers_run_concurrently() {
    let dir = tempfile::tempdir().unwrap();
    let opts = common::manual()
        .durability(Durability::None)
        .max_segment_size(4096);
    let store = Arc::new(Store::open(dir.path(), opts).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    // Each key's value always encodes the key, so a reader can tell a torn or misplaced value.
    let value_for = |k: u32, round: u32| format!("{k}:{round}:{}", "x".repeat((k % 50) as usize));
    for k in 0..100u32 {
        store
            .put(&k.to_le_bytes(), value_for(k, 0).as_bytes())
            .unwrap();
    }
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
            thread::spawn(move || {
                let mut reads = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for k in 0..100u32 {
                        let v = store.get(&k.to_le_bytes()).unwrap().expect("never deleted");
                        let v = String::from_utf8(v).unwrap();
                        assert!(v.starts_with(&format!("{k}:")), "key {k} read {v}");
                        reads += 1;
                    }
                }
                reads
            })
        })
        .collect();
    let writers: Vec<_> = (0..2)
        .map(|w: u32| {
            let store = Arc::clone(&store);
            thread::spawn(move || {
                for round in 1..200u32 {
                    for k in (w..100).step_by(2) {
                        store
                            .put(&k.to_le_bytes(), value_for(k, round).as_bytes())
                            .unwrap();
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    for k in 0..100u32 {
        assert_eq!(
            store.get(&k.to_le_bytes()).unwrap(),
            Some(value_for(k, 199).into_bytes())
        );
    }
}

#[test]
fn concurrent_sync_writers_are_all_durable() {
    let dir = tempfile::tempdir().unwrap();
    let opts = common::manual().durability(Durability::Sync);
    let store = Arc::new(Store::open(dir.path(), opts.clone()).unwrap());
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let store = Arc::clone(&store);
            thread::spawn(move || {
                for i in 0..50u8 {
                    store.put(&[t, i], &[t ^ i; 10]).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    drop(store);
    let store = Store::open(dir.path(), opts).unwrap();
    assert_eq!(store.len(), 200);
    for t in 0..4u8 {
        for i in 0..50u8 {
            assert_eq!(store.get(&[t, i]).unwrap(), Some(vec![t ^ i; 10]));
        }
    }
}

fn crc32(bytes: &[u8]) -> u32 {
    // Bitwise CRC-32 (IEEE), independent of the engine's implementation.
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn many_short_lived_opens_leave_no_litter() {
    // Each open appends to the segment the last one left active: 3,000 opens, one put each,
    // leave one segment and the index, not 3,000 segments.
    let dir = tempfile::tempdir().unwrap();
    for i in 0..3000u32 {
        let store = Store::open(dir.path(), common::manual()).unwrap();
        store.put(&i.to_be_bytes(), &i.to_le_bytes()).unwrap();
    }
    let store = Store::open(dir.path(), common::manual()).unwrap();
    assert_eq!(store.len(), 3000);
    assert!(store.recovery_report().index_rebuilt.is_none());
    assert_eq!(store.stats().segments, 1);
    let files: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(files.len() <= 8, "{files:?}");
}

/// Every file of `dir` with its length, modification time and contents.
fn snapshot(dir: &Path) -> Vec<(String, u64, std::time::SystemTime, Vec<u8>)> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            (
                e.file_name().into_string().unwrap(),
                meta.len(),
                meta.modified().unwrap(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

fn populate(dir: &Path) {
    let store = Store::open(dir, common::manual()).unwrap();
    store.put(b"a", b"1").unwrap();
    store.put(b"b", b"2").unwrap();
    store.increment_counter("ns:x").unwrap();
    store.close().unwrap();
}

#[test]
fn a_read_only_store_reads_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path());
    let before = snapshot(dir.path());
    let store = Store::open(dir.path(), common::manual().read_only(true)).unwrap();
    assert!(store.is_read_only());
    assert_eq!(store.get(b"a").unwrap(), Some(b"1".to_vec()));
    assert_eq!(store.keys().count(), 2);
    assert_eq!(store.counter("ns:x").unwrap(), 1);
    assert!(store.verify().unwrap().is_clean());
    let read_only = |r: Result<(), Error>| matches!(r, Err(Error::ReadOnly(_)));
    assert!(read_only(store.put(b"c", b"3")));
    assert!(read_only(store.delete(b"a").map(drop)));
    assert!(read_only(store.compact().map(drop)));
    assert!(read_only(store.increment_counter("ns:x").map(drop)));
    store.sync().unwrap();
    store.close().unwrap();
    assert_eq!(
        snapshot(dir.path()),
        before,
        "no file was created or changed"
    );
    // An index that was not closed cleanly cannot be rebuilt without writing.
    logcache_engine::fuzz::simulate_os_crash(dir.path());
    let before = snapshot(dir.path());
    let err = Store::open(dir.path(), common::manual().read_only(true)).unwrap_err();
    assert!(matches!(err, Error::BadIndex { .. }), "{err}");
    assert_eq!(snapshot(dir.path()), before);
    let missing = dir.path().join("missing");
    assert!(Store::open(&missing, common::manual().read_only(true)).is_err());
    assert!(!missing.exists(), "a read-only open creates nothing");
}

#[test]
fn an_open_that_may_not_rebuild_refuses_and_changes_nothing() {
    let dir = two_segment_store();
    let before = directory(dir.path());
    // The index was left as an OS crash leaves it: it must be rebuilt.
    let err = Store::open(dir.path(), common::manual().rebuild_index(false)).unwrap_err();
    assert!(matches!(err, Error::BadIndex { .. }), "{err}");
    assert_eq!(directory(dir.path()), before, "nothing changed");
    let store = Store::open(dir.path(), common::manual()).unwrap();
    assert!(store.recovery_report().index_rebuilt.is_some());
    assert_eq!(store.len(), 6);
}

/// `get_with`'s closure runs while the value's segment is held mapped; it may read the store
/// again even while another thread maps new segments (a plain read lock there would wait
/// behind the queued mapping, forever).
#[test]
fn a_get_with_closure_may_read_the_store_while_segments_are_mapped() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(
        Store::open(dir.path(), Options::default().max_segment_size(4096)).unwrap(),
    );
    store.put(b"a", b"one").unwrap();
    let writer = {
        let store = std::sync::Arc::clone(&store);
        std::thread::spawn(move || {
            for i in 0..3000u32 {
                store.put(&i.to_le_bytes(), &[7u8; 100]).unwrap();
            }
        })
    };
    while !writer.is_finished() {
        let got = store.get_with(b"a", |value, _| {
            // Another thread may open the newest segment right now.
            std::thread::yield_now();
            let again = store.get(&0u32.to_le_bytes()).unwrap();
            (value.to_vec(), again.is_some())
        });
        assert_eq!(got.unwrap().map(|(v, _)| v), Some(b"one".to_vec()));
    }
    writer.join().unwrap();
}

/// The names of the index table files in `dir`, sorted.
fn table_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("INDEX.") && !n.ends_with(".tmp"))
        .collect();
    names.sort();
    names
}

#[test]
fn an_open_removes_index_tables_of_other_generations() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.put(b"k", b"v").unwrap();
    store.close().unwrap();
    let current = table_files(dir.path());
    assert_eq!(current.len(), 1, "{current:?}");
    // A table a grow could not remove, newer than the current one by its name.
    let leftover = dir.path().join("INDEX.00000000000000a0");
    fs::write(&leftover, b"left over").unwrap();
    let store = open(dir.path());
    assert!(store.recovery_report().index_rebuilt.is_none());
    assert_eq!(store.get(b"k").unwrap(), Some(b"v".to_vec()));
    assert_eq!(table_files(dir.path()), current, "the leftover is gone");
    store.close().unwrap();

    // Without `INDEX`, the open rebuilds into a new generation and removes every other.
    fs::write(&leftover, b"left over").unwrap();
    fs::remove_file(dir.path().join("INDEX")).unwrap();
    let store = open(dir.path());
    assert!(store.recovery_report().index_rebuilt.is_some());
    assert_eq!(store.get(b"k").unwrap(), Some(b"v".to_vec()));
    assert_eq!(table_files(dir.path()), ["INDEX.00000000000000a1"]);
}
