//! Crash simulation on files: cut the newest segment at every byte, flip bytes in its unsynced
//! tail and in sealed segments, append garbage. After reopen the store must hold exactly a
//! prefix of the writes, including every synced one, or refuse to open with `Error::Corrupt`
//! when the damage is outside the newest segment's tail.

mod common;

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use common::{contents, copy_dir, segment_files, segment_id};
use logcache_engine::{Durability, Error, Options, Store, WriteBatch};

const HEADER: u64 = 20;

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

/// Id and length of the newest segment; (0, header length) before the first one exists.
fn newest_segment(dir: &Path) -> (u64, u64) {
    match segment_files(dir).pop() {
        Some(path) => (segment_id(&path), fs::metadata(&path).unwrap().len()),
        None => (0, HEADER),
    }
}

/// Runs the ops on a fresh store, syncing after two thirds of them, and notes where each op's
/// records lie.
fn build_history() -> History {
    let dir = tempfile::tempdir().unwrap();
    let ops = generate_ops(150);
    let mut spans: Vec<Span> = Vec::new();
    let mut synced = 0;
    let store = Store::open(dir.path(), options()).unwrap();
    for (i, op) in ops.iter().enumerate() {
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
        let (segment, end) = newest_segment(dir.path());
        let start = match spans.last() {
            Some(prev) if prev.segment == segment => prev.end,
            _ => HEADER,
        };
        spans.push(Span {
            segment,
            start,
            end,
        });
        if i == ops.len() * 2 / 3 {
            store.sync().unwrap();
            synced = i + 1;
        }
    }
    drop(store);
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
    m
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

#[test]
fn cutting_the_newest_segment_at_every_byte_leaves_an_exact_prefix() {
    let h = build_history();
    let (newest, len) = newest_segment(h.dir.path());
    assert!(newest >= 3, "the history spans several segments");
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
        let at_boundary =
            cut <= HEADER || h.spans.iter().any(|s| s.segment == newest && s.end == cut);
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
        HEADER
    };
    assert!(
        len - tail_start > 200,
        "the unsynced tail is long enough to matter"
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
            let torn = store.recovery_report().torn_tail.expect("reported");
            assert_eq!(torn.offset, h.spans[hit].start);
            assert_eq!(torn.bytes, len - h.spans[hit].start);
        }
    }
}

#[test]
fn flipped_bytes_in_a_sealed_segment_are_reported_never_served() {
    let h = build_history();
    let first = segment_files(h.dir.path())[0].clone();
    let id = segment_id(&first);
    let len = fs::metadata(&first).unwrap().len();
    for pos in 0..len {
        let (copy, path) = damaged_copy(&h, id, |p| {
            let mut bytes = fs::read(p).unwrap();
            bytes[pos as usize] ^= 0x10;
            fs::write(p, bytes).unwrap();
        });
        match Store::open(copy.path(), options()) {
            Err(Error::Corrupt {
                segment, offset, ..
            }) => {
                assert_eq!(segment, id, "flip at {pos}");
                let op_start = h
                    .spans
                    .iter()
                    .find(|s| s.segment == id && s.start <= pos && pos < s.end)
                    .map_or(0, |s| s.start);
                assert!(
                    (op_start..=pos).contains(&offset),
                    "flip at {pos} reported at {offset}"
                );
            }
            other => panic!("flip at {pos}: expected Corrupt, got {other:?}"),
        }
        let mut expect = fs::read(first.as_path()).unwrap();
        expect[pos as usize] ^= 0x10;
        assert_eq!(
            fs::read(&path).unwrap(),
            expect,
            "the damaged file is left as it was"
        );
    }
}

#[test]
fn zeros_or_garbage_after_the_last_record_are_cut() {
    let h = build_history();
    let (newest, len) = newest_segment(h.dir.path());
    let mut rng = common::Rng::new(7);
    for (name, tail) in [
        ("zeros", vec![0u8; 4096]),
        (
            "garbage",
            (0..4096).map(|_| rng.next_u64() as u8).collect::<Vec<_>>(),
        ),
    ] {
        let (copy, path) = damaged_copy(&h, newest, |p| {
            let mut bytes = fs::read(p).unwrap();
            bytes.extend_from_slice(&tail);
            fs::write(p, bytes).unwrap();
        });
        let store = Store::open(copy.path(), options()).unwrap();
        assert_eq!(contents(&store), model(&h.ops), "{name}");
        let torn = store.recovery_report().torn_tail.unwrap();
        assert_eq!(
            (torn.segment, torn.offset, torn.bytes),
            (newest, len, 4096),
            "{name}"
        );
        drop(store);
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            len,
            "{name}: the cut is durable"
        );
    }
}

#[test]
fn a_segment_torn_while_being_created_is_dropped() {
    let h = build_history();
    let (newest, _) = newest_segment(h.dir.path());
    for partial in [0usize, 1, 7, 19, 20] {
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
