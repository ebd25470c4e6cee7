//! Crash simulation on files: cut the newest segment at every byte, flip bytes in its unsynced
//! tail and in sealed segments, leave garbage after its records. After reopen the store must
//! hold exactly a prefix of the writes, including every synced one; damage outside the
//! newest segment's unsynced tail costs the entries it hits (and those of the op after them),
//! never the store, and `Options::strict` refuses it.

mod common;

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use common::{contents, copy_dir, segment_files, segment_id};
use logcache_engine::{Durability, Error, Options, Store, WriteBatch};

/// Where the first record of a segment starts (after its 20-byte header, padded to 8).
const DATA_START: u64 = 24;

/// Ops in the history: enough for several segments, the newest holding many unsynced ones.
const OPS: u64 = 160;

enum Op {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
    Batch(Vec<(Vec<u8>, Option<Vec<u8>>)>),
}

/// Where an op's records lie.
#[derive(Clone, Copy, Debug)]
struct Span {
    segment: u64,
    start: u64,
    /// End of its last record's padding: where the next op starts.
    end: u64,
}

struct History {
    dir: tempfile::TempDir,
    ops: Vec<Op>,
    spans: Vec<Span>,
    /// Ops `..synced` were acknowledged by `Store::sync`.
    synced: usize,
}

fn options() -> Options {
    common::manual()
        .durability(Durability::Flush)
        .max_segment_size(1024)
}

fn key(i: u64) -> Vec<u8> {
    format!("key-{}", i % 23).into_bytes()
}

fn generate_ops(n: u64) -> Vec<Op> {
    let mut rng = common::Rng::new(0x5eed);
    (0..n)
        // Every kind of op lands in every segment: deletes, batches and puts in a fixed cycle.
        .map(|i| match i % 7 {
            0 => Op::Delete(key(rng.next_u64())),
            3 => Op::Batch(
                (0..rng.range(2, 5))
                    .map(|j| {
                        let value = (j % 3 != 2).then(|| vec![j as u8; rng.range(0, 30) as usize]);
                        (key(rng.next_u64()), value)
                    })
                    .collect(),
            ),
            _ => Op::Put(
                key(rng.next_u64()),
                format!("v{i}-")
                    .repeat(rng.range(0, 8) as usize)
                    .into_bytes(),
            ),
        })
        .collect()
}

/// Id and file length of the newest segment.
fn newest_segment(dir: &Path) -> (u64, u64) {
    let path = segment_files(dir).pop().unwrap();
    (segment_id(&path), fs::metadata(&path).unwrap().len())
}

/// Runs the ops on a fresh store, syncing after two thirds of them, and notes where each op's
/// records lie.
fn build_history() -> History {
    build_history_syncing_after(OPS as usize * 2 / 3)
}

/// [`build_history`], syncing after op `sync_after` (counted from 0).
fn build_history_syncing_after(sync_after: usize) -> History {
    let dir = tempfile::tempdir().unwrap();
    let ops = generate_ops(OPS);
    let mut spans: Vec<Span> = Vec::new();
    let mut synced = 0;
    let store = Store::open(dir.path(), options()).unwrap();
    for (i, op) in ops.iter().enumerate() {
        let before = store.log_position();
        match op {
            Op::Put(k, v) => store.put(k, v).unwrap(),
            Op::Delete(k) => {
                store.delete(k).unwrap();
            }
            Op::Batch(entries) => {
                let mut batch = WriteBatch::new();
                for (k, v) in entries {
                    match v {
                        Some(v) => batch.put(k, v),
                        None => batch.delete(k),
                    };
                }
                store.write_batch(&batch).unwrap();
            }
        }
        let (segment, end) = store.log_position();
        let span = if (segment, end) == before {
            // Nothing written (a delete of an absent key).
            Span {
                segment,
                start: end,
                end,
            }
        } else {
            let start = if before.0 == segment {
                before.1
            } else {
                DATA_START
            };
            Span {
                segment,
                start,
                end,
            }
        };
        spans.push(span);
        if i == sync_after {
            store.sync().unwrap();
            synced = i + 1;
        }
    }
    drop(store);
    // The damage each test does stands for what an OS crash or a power cut leaves, after
    // which the index is rebuilt from the segments.
    logcache_engine::fuzz::simulate_os_crash(dir.path());
    History {
        dir,
        ops,
        spans,
        synced,
    }
}

/// The expected contents after the first `n` ops. A delete of an absent key writes nothing,
/// which the spans reflect (its span is empty).
fn model(ops: &[Op]) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut m = BTreeMap::new();
    for op in ops {
        apply(&mut m, op);
    }
    m
}

/// Applies `op` to the expected contents `m`.
fn apply(m: &mut BTreeMap<Vec<u8>, Vec<u8>>, op: &Op) {
    match op {
        Op::Put(k, v) => {
            m.insert(k.clone(), v.clone());
        }
        Op::Delete(k) => {
            m.remove(k);
        }
        Op::Batch(entries) => {
            for (k, v) in entries {
                match v {
                    Some(v) => m.insert(k.clone(), v.clone()),
                    None => m.remove(k),
                };
            }
        }
    }
}

/// A copy of the history's store with `damage` applied to the file of segment `id`.
fn damaged_copy(h: &History, id: u64, damage: impl FnOnce(&Path)) -> (tempfile::TempDir, PathBuf) {
    let copy = tempfile::tempdir().unwrap();
    copy_dir(h.dir.path(), copy.path());
    let path = segment_files(copy.path())
        .into_iter()
        .find(|p| segment_id(p) == id)
        .unwrap();
    damage(&path);
    (copy, path)
}

/// Ops whose records all lie before `offset` of the newest segment, or in older segments.
fn ops_before(h: &History, newest: u64, offset: u64) -> usize {
    h.spans
        .iter()
        .take_while(|s| s.segment < newest || s.end <= offset)
        .count()
}

/// End of the records of segment `id`.
fn records_end(h: &History, id: u64) -> u64 {
    h.spans
        .iter()
        .filter(|s| s.segment == id)
        .map(|s| s.end)
        .max()
        .unwrap()
}

#[test]
fn cutting_the_newest_segment_at_every_byte_leaves_an_exact_prefix() {
    let h = build_history();
    let (newest, len) = newest_segment(h.dir.path());
    assert!(newest >= 3 << 20, "the history spans several segments");
    let last = records_end(&h, newest);
    let mut torn = 0;
    for cut in 0..=len {
        let (copy, _) = damaged_copy(&h, newest, |p| {
            OpenOptions::new()
                .write(true)
                .open(p)
                .unwrap()
                .set_len(cut)
                .unwrap()
        });
        let store = Store::open(copy.path(), options())
            .unwrap_or_else(|e| panic!("cut at {cut}: open failed: {e}"));
        let n = ops_before(&h, newest, cut);
        assert_eq!(contents(&store), model(&h.ops[..n]), "cut at {cut}");
        // A cut between ops or in the zeros after the last leaves whole records only.
        let at_boundary = cut <= DATA_START
            || cut >= last
            || h.spans.iter().any(|s| s.segment == newest && s.end == cut);
        torn += usize::from(store.recovery_report().torn_tail.is_some());
        assert_eq!(
            store.recovery_report().torn_tail.is_some(),
            !at_boundary,
            "cut at {cut}"
        );
        // The repaired store takes new writes and keeps them.
        store.put(b"after", b"crash").unwrap();
        drop(store);
        let store = Store::open(copy.path(), options()).unwrap();
        let mut expect = model(&h.ops[..n]);
        expect.insert(b"after".to_vec(), b"crash".to_vec());
        assert_eq!(contents(&store), expect, "cut at {cut}, after a new write");
    }
    assert!(torn > 0);
}

#[test]
fn flipped_bytes_in_the_unsynced_tail_leave_a_prefix_with_every_synced_write() {
    let h = build_history();
    let (newest, len) = newest_segment(h.dir.path());
    let synced_span = h.spans[h.synced - 1];
    let tail_start = if synced_span.segment == newest {
        synced_span.end
    } else {
        DATA_START
    };
    let last = records_end(&h, newest);
    let unsynced_ops = h.spans[h.synced..]
        .iter()
        .filter(|s| s.segment == newest && s.end > s.start)
        .count();
    assert!(
        unsynced_ops >= 5,
        "the unsynced tail is long enough to matter: {unsynced_ops} ops"
    );
    for pos in tail_start..len {
        for mask in [0x01u8, 0x80, 0xff] {
            let (copy, _) = damaged_copy(&h, newest, |p| {
                let mut bytes = fs::read(p).unwrap();
                bytes[pos as usize] ^= mask;
                fs::write(p, bytes).unwrap();
            });
            let store = Store::open(copy.path(), options())
                .unwrap_or_else(|e| panic!("flip {mask:#x} at {pos}: open failed: {e}"));
            let torn = store.recovery_report().torn_tail.expect("reported");
            if pos >= last {
                // In the zeros after the records: every op stays, the stray byte is cut.
                assert_eq!(contents(&store), model(&h.ops), "flip {mask:#x} at {pos}");
                assert_eq!((torn.offset, torn.bytes), (last, len - last));
                continue;
            }
            let hit = h
                .spans
                .iter()
                .position(|s| s.segment == newest && s.start <= pos && pos < s.end)
                .unwrap();
            assert!(hit >= h.synced);
            assert_eq!(
                contents(&store),
                model(&h.ops[..hit]),
                "flip {mask:#x} at {pos}"
            );
            assert_eq!(torn.offset, h.spans[hit].start);
            assert_eq!(torn.bytes, len - h.spans[hit].start);
        }
    }
}

/// The ops of segment `id` whose records a flip at `pos` costs: the op holding the byte, and,
/// if the byte is in the op's last record, the next op with records in the segment (the walk
/// cannot tell whether it ends a batch the damaged record began, and drops it too). None where
/// the byte is no op's.
fn lost_to_a_flip(h: &History, id: u64, pos: u64) -> Vec<usize> {
    let in_segment: Vec<usize> = (0..h.spans.len())
        .filter(|&i| h.spans[i].segment == id && h.spans[i].end > h.spans[i].start)
        .collect();
    let Some(k) = in_segment
        .iter()
        .position(|&i| (h.spans[i].start..h.spans[i].end).contains(&pos))
    else {
        return Vec::new();
    };
    // Damage before a batch's last record drops the rest of the batch and stops there.
    let op = in_segment[k];
    let in_last_record = match &h.ops[op] {
        Op::Batch(entries) => {
            let pad = |k: &[u8], v: usize| (21 + k.len() + v).next_multiple_of(8) as u64;
            let before_last: u64 = entries[..entries.len() - 1]
                .iter()
                .map(|(k, v)| pad(k, v.as_ref().map_or(0, Vec::len)))
                .sum();
            pos >= h.spans[op].start + before_last
        }
        _ => true,
    };
    let upto = if in_last_record { k + 2 } else { k + 1 };
    in_segment[k..upto.min(in_segment.len())].to_vec()
}

/// The contents after every op but `lost`.
fn model_without(h: &History, lost: &[usize]) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let kept: Vec<&Op> = (0..h.ops.len())
        .filter(|i| !lost.contains(i))
        .map(|i| &h.ops[i])
        .collect();
    let mut m = BTreeMap::new();
    for op in kept {
        apply(&mut m, op);
    }
    m
}

#[test]
fn flipped_bytes_in_a_sealed_segment_cost_their_entries_never_the_store() {
    let h = build_history();
    let first = segment_files(h.dir.path())[0].clone();
    let id = segment_id(&first);
    let len = fs::metadata(&first).unwrap().len();
    let mut damaged_opens = 0;
    for pos in 0..len {
        let (copy, path) = damaged_copy(&h, id, |p| {
            let mut bytes = fs::read(p).unwrap();
            bytes[pos as usize] ^= 0x10;
            fs::write(p, bytes).unwrap();
        });
        let store = Store::open(copy.path(), options())
            .unwrap_or_else(|e| panic!("flip at {pos}: open failed: {e}"));
        let lost = lost_to_a_flip(&h, id, pos);
        assert_eq!(
            contents(&store),
            model_without(&h, &lost),
            "flip at {pos}: every other op is there, nothing else"
        );
        let report = store.recovery_report();
        assert!(
            report.torn_tail.is_none(),
            "flip at {pos}: a sealed segment is never cut"
        );
        if !lost.is_empty() {
            let d = report
                .damaged
                .iter()
                .find(|d| d.segment == id)
                .unwrap_or_else(|| panic!("flip at {pos}: reported"));
            assert!(
                d.offset <= pos && pos < d.offset + d.len,
                "flip at {pos} reported at {}..{}",
                d.offset,
                d.offset + d.len
            );
            damaged_opens += 1;
        }
        drop(store);
        let mut expect = fs::read(first.as_path()).unwrap();
        expect[pos as usize] ^= 0x10;
        assert_eq!(
            fs::read(&path).unwrap(),
            expect,
            "the damaged file is left as it was"
        );
        // Strict mode refuses what the default skips.
        if !lost.is_empty() {
            logcache_engine::fuzz::simulate_os_crash(copy.path());
            let strict = Store::open(copy.path(), options().strict(true));
            assert!(
                matches!(strict, Err(Error::Corrupt { segment, .. }) if segment == id),
                "flip at {pos}: strict open refuses"
            );
        }
    }
    assert!(damaged_opens > 0);
}

#[test]
fn flipped_bytes_the_index_knew_were_synced_are_skipped_not_cut() {
    let h = build_history_syncing_after(OPS as usize - 4);
    let (newest, len) = newest_segment(h.dir.path());
    let synced_span = h.spans[h.synced - 1];
    assert_eq!(
        synced_span.segment, newest,
        "the sync covered part of the newest segment"
    );
    let synced_end = synced_span.end;
    assert!(synced_end > DATA_START + 100);
    for pos in DATA_START..synced_end {
        let (copy, _) = damaged_copy(&h, newest, |p| {
            let mut bytes = fs::read(p).unwrap();
            bytes[pos as usize] ^= 0x04;
            fs::write(p, bytes).unwrap();
        });
        logcache_engine::fuzz::simulate_os_crash_after_sync(copy.path(), synced_end);
        let store = Store::open(copy.path(), options())
            .unwrap_or_else(|e| panic!("flip at {pos}: open failed: {e}"));
        let lost = lost_to_a_flip(&h, newest, pos);
        assert!(!lost.is_empty(), "flip at {pos} hits an op");
        assert_eq!(
            contents(&store),
            model_without(&h, &lost),
            "flip at {pos}: the writes after the damage stay; lost {lost:?}, {:?}",
            store.recovery_report()
        );
        assert!(store.recovery_report().torn_tail.is_none(), "flip at {pos}");
        assert_eq!(store.recovery_report().damaged.len(), 1, "flip at {pos}");
        // The store goes on: a new write is kept.
        store.put(b"after", b"damage").unwrap();
        drop(store);
        let store = Store::open(copy.path(), options()).unwrap();
        assert_eq!(
            store.get(b"after").unwrap().as_deref(),
            Some(&b"damage"[..])
        );
    }
    // Beyond what the index knew was synced, damage is a torn write: the tail is cut.
    let pos = (synced_end + len.min(records_end(&h, newest))) / 2;
    let (copy, _) = damaged_copy(&h, newest, |p| {
        let mut bytes = fs::read(p).unwrap();
        bytes[pos as usize] ^= 0x04;
        fs::write(p, bytes).unwrap();
    });
    logcache_engine::fuzz::simulate_os_crash_after_sync(copy.path(), synced_end);
    let store = Store::open(copy.path(), options()).unwrap();
    assert!(store.recovery_report().torn_tail.is_some());
}

#[test]
fn garbage_after_the_last_record_is_cut_and_zeros_are_the_end() {
    let h = build_history();
    let (newest, len) = newest_segment(h.dir.path());
    let last = records_end(&h, newest);
    let mut rng = common::Rng::new(7);
    let garbage: Vec<u8> = (0..(len - last))
        .map(|_| rng.next_u64() as u8 | 1)
        .collect();
    // What a write whose first page was lost leaves: zeros, then data.
    let mut late = vec![0u8; (len - last) as usize];
    late[100] = 0x42;
    for (name, tail, torn) in [
        ("zeros", vec![0u8; (len - last) as usize], false),
        ("garbage", garbage, true),
        ("data after zeros", late, true),
    ] {
        let (copy, path) = damaged_copy(&h, newest, |p| {
            let mut bytes = fs::read(p).unwrap();
            bytes[last as usize..].copy_from_slice(&tail);
            fs::write(p, bytes).unwrap();
        });
        let store = Store::open(copy.path(), options()).unwrap();
        assert_eq!(contents(&store), model(&h.ops), "{name}");
        let report = store.recovery_report().torn_tail;
        assert_eq!(report.is_some(), torn, "{name}: {report:?}");
        if let Some(report) = report {
            assert_eq!(
                (report.segment, report.offset, report.bytes),
                (newest, last, len - last),
                "{name}"
            );
        }
        drop(store);
        let bytes = fs::read(&path).unwrap();
        assert_eq!(bytes.len() as u64, len, "{name}: the reservation is kept");
        assert!(
            bytes[last as usize..].iter().all(|&b| b == 0),
            "{name}: the cut is durable"
        );
    }
}

#[test]
fn a_segment_torn_while_being_created_is_dropped() {
    let h = build_history();
    let (newest, _) = newest_segment(h.dir.path());
    // A reserved file still all zeros, or cut before its header was complete.
    for partial in [0usize, 1, 7, 19, 20, 1024] {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(h.dir.path(), copy.path());
        let next_writer_id = (newest / (1 << 20) + 1) << 20;
        let next = copy.path().join(format!("{next_writer_id:016x}.data"));
        // What a crash between creating the file and syncing its header can leave.
        fs::write(&next, vec![0u8; partial]).unwrap();
        let store = Store::open(copy.path(), options()).unwrap();
        assert_eq!(contents(&store), model(&h.ops), "{partial} bytes");
        assert_eq!(store.recovery_report().empty_segments_removed, 1);
        store.put(b"new", b"write").unwrap();
        drop(store);
        let store = Store::open(copy.path(), options()).unwrap();
        assert_eq!(store.get(b"new").unwrap(), Some(b"write".to_vec()));
    }
}
