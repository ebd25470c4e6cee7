//! Fuzz target bodies (feature `fuzzing`). The cargo-fuzz targets in `fuzz/` call these, and
//! `engine/tests/fuzz_corpus.rs` runs them over the committed corpus and random inputs, so
//! `cargo test` exercises them without a nightly toolchain. Each body panics on a violated
//! invariant and on nothing else.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arbitrary::{Arbitrary, Unstructured};

use crate::hint;
use crate::record;
use crate::segment::{self, FileKind};
use crate::simdisk::{SimDisk, SimFaults};
use crate::vfs::{Dir, Open, Vfs};
use crate::{Durability, Error, Options, Store, WriteBatch};

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

/// One step of the model test.
#[derive(Debug, Arbitrary)]
enum Op {
    Put(u8, Value),
    PutExpired(u8, Value),
    Delete(u8),
    Get(u8),
    Batch(Vec<(u8, Option<Value>)>),
    Flush,
    Sync,
    Compact,
    Reopen,
}

/// A value of 0 to 255 bytes, or a larger one.
#[derive(Debug)]
struct Value(Vec<u8>);

impl<'a> Arbitrary<'a> for Value {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let len = if u.ratio(1, 8)? {
            u.int_in_range(256..=2000)?
        } else {
            u.int_in_range(0..=255)?
        };
        let fill: u8 = u.arbitrary()?;
        Ok(Value(vec![fill; len]))
    }
}

fn key(k: u8) -> Vec<u8> {
    vec![b'k', k % 32]
}

fn options(u: &mut Unstructured<'_>) -> arbitrary::Result<Options> {
    let durability = *u.choose(&[Durability::None, Durability::Flush, Durability::Sync])?;
    let segment = *u.choose(&[200u64, 1024, 1 << 20])?;
    Ok(Options::default()
        .durability(durability)
        .max_segment_size(segment)
        .auto_compaction(false))
}

fn contents(store: &Store) -> Model {
    store
        .keys()
        .map(|k| {
            let v = store
                .get(&k)
                .expect("a listed key reads")
                .expect("a listed key has a value");
            (k, v)
        })
        .collect()
}

/// Arbitrary operations against a `BTreeMap` model, checked after every step and after a
/// final reopen.
pub fn ops_model(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(opts) = options(&mut u) else { return };
    let Ok(ops) = u
        .arbitrary_iter::<Op>()
        .and_then(|it| it.take(64).collect::<arbitrary::Result<Vec<Op>>>())
    else {
        return;
    };
    let dir = SimDir::new();
    let opts = dir.options(opts);
    let mut store = Store::open(dir.path(), opts.clone()).expect("open");
    let mut model = Model::new();
    for op in ops {
        match op {
            Op::Put(k, Value(v)) => {
                store.put(&key(k), &v).expect("put");
                model.insert(key(k), v);
            }
            Op::PutExpired(k, Value(v)) => {
                store.put_expiring_at(&key(k), &v, 1).expect("put");
                model.remove(&key(k));
            }
            Op::Delete(k) => {
                let existed = store.delete(&key(k)).expect("delete");
                assert_eq!(existed, model.remove(&key(k)).is_some());
            }
            Op::Get(k) => assert_eq!(
                store.get(&key(k)).expect("get"),
                model.get(&key(k)).cloned()
            ),
            Op::Batch(entries) => {
                let mut batch = WriteBatch::new();
                for (k, v) in entries.into_iter().take(16) {
                    match v {
                        Some(Value(v)) => {
                            batch.put(&key(k), &v);
                            model.insert(key(k), v);
                        }
                        None => {
                            batch.delete(&key(k));
                            model.remove(&key(k));
                        }
                    }
                }
                store.write_batch(&batch).expect("batch");
            }
            Op::Flush => store.flush().expect("flush"),
            Op::Sync => store.sync().expect("sync"),
            Op::Compact => {
                store.compact().expect("compact");
                assert_eq!(store.stats().dead_bytes, 0);
            }
            Op::Reopen => {
                drop(store);
                store = Store::open(dir.path(), opts.clone()).expect("reopen");
                assert_eq!(store.recovery_report().torn_tail, None);
            }
        }
        assert_eq!(store.len(), model.len());
    }
    assert_eq!(contents(&store), model);
    drop(store);
    let store = Store::open(dir.path(), opts).expect("final reopen");
    assert_eq!(contents(&store), model);
}

/// A write of the crash test: a put, a delete or a two-key batch.
#[derive(Debug, Arbitrary)]
enum Write {
    Put(u8, Value),
    Delete(u8),
    Batch(u8, u8, Value),
}

fn apply(model: &mut Model, w: &Write) {
    match w {
        Write::Put(k, Value(v)) => {
            model.insert(key(*k), v.clone());
        }
        Write::Delete(k) => {
            model.remove(&key(*k));
        }
        Write::Batch(a, b, Value(v)) => {
            model.insert(key(*a), v.clone());
            model.remove(&key(*b));
        }
    }
}

/// Makes the index of the (closed) store in `dir` look as an OS crash leaves it: changed
/// during another boot and not closed cleanly, so the next open rebuilds it from the
/// segments. Crash tests that cut or damage segment files call this: only an OS crash or a
/// power cut loses bytes a process handed to the OS. The index's page with the segments'
/// synced lengths is taken as lost too (a crash may leave it so), so that nothing of the
/// newest segment is known to be durable: see [`simulate_os_crash_after_sync`].
pub fn simulate_os_crash(dir: &Path) {
    simulate_os_crash_after_sync(dir, 0);
}

/// [`simulate_os_crash`], with the index knowing that the newest segment was durable up to
/// `synced` bytes (an fdatasync covered them and the index page saying so reached the disk).
pub fn simulate_os_crash_after_sync(dir: &Path, synced: u64) {
    os_crash_in(&Dir::real(dir), synced);
}

/// [`simulate_os_crash_after_sync`] on any file system.
fn os_crash_in(dir: &Dir, synced: u64) {
    use crate::index::file::{PointerFile, TableFile, row};
    use std::sync::atomic::Ordering;
    let Some(pointer) = PointerFile::open(dir, true).expect("open INDEX") else {
        return;
    };
    if let Ok(table) = TableFile::open(dir, pointer.generation(), true) {
        let rows = 1..=table.shape().segments;
        let newest = rows
            .clone()
            .filter(|&n| table.row(n, row::STATE).load(Ordering::Acquire) != row::FREE)
            .max_by_key(|&n| table.row(n, row::ID).load(Ordering::Acquire));
        for n in rows {
            let value = if Some(n) == newest { synced } else { 0 };
            table.row(n, row::SYNCED).store(value, Ordering::Release);
        }
        table.sync().expect("sync the table");
    }
    pointer.mark_dirty([u64::MAX, u64::MAX]);
    pointer.sync().expect("sync INDEX");
}

/// The writes of a crash test: up to 48.
fn crash_writes(u: &mut Unstructured<'_>) -> Option<Vec<Write>> {
    u.arbitrary_iter::<Write>()
        .and_then(|it| it.take(48).collect::<arbitrary::Result<Vec<Write>>>())
        .ok()
}

/// The options of a crash test: every write handed to the OS, small or larger segments.
fn crash_options(u: &mut Unstructured<'_>) -> Options {
    Options::default()
        .durability(Durability::Flush)
        .max_segment_size(*u.choose(&[300u64, 2048]).unwrap_or(&2048))
        .auto_compaction(false)
}

/// Writes, a sync at some point, more writes, then a simulated crash: the newest segment is
/// cut at any byte after the last sync (a torn write or lost unsynced data) and bytes after
/// the sync are flipped. After reopening, the store must hold exactly the writes before the
/// first damaged one, which include every synced write.
pub fn crash_recovery(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Some(writes) = crash_writes(&mut u) else {
        return;
    };
    if writes.is_empty() {
        return;
    }
    let synced = u.int_in_range(0..=writes.len()).unwrap_or(0);
    let dir = SimDir::new();
    let opts = dir.options(crash_options(&mut u));
    // Where each write's records end: (segment id, end offset).
    let mut ends: Vec<(u64, u64)> = Vec::new();
    let mut synced_end = (0u64, 0u64);
    {
        let store = Store::open(dir.path(), opts.clone()).expect("open");
        for (i, w) in writes.iter().enumerate() {
            match w {
                Write::Put(k, Value(v)) => store.put(&key(*k), v).expect("put"),
                Write::Delete(k) => {
                    store.delete(&key(*k)).expect("delete");
                }
                Write::Batch(a, b, Value(v)) => {
                    let mut batch = WriteBatch::new();
                    batch.put(&key(*a), v).delete(&key(*b));
                    store.write_batch(&batch).expect("batch");
                }
            }
            let end = store.log_position();
            ends.push(end);
            if i + 1 == synced {
                store.sync().expect("sync");
                synced_end = end;
            }
        }
        // Dropping syncs, but the bytes after the explicit sync are then cut or damaged as a
        // power cut just before the drop could have left them.
        drop(store);
    }
    dir.os_crash_after_sync(0);
    let Some((path, newest, len)) = dir.newest_segment() else {
        return;
    };
    // Only bytes after the last sync of the newest segment may be lost or damaged.
    let floor = if synced_end.0 == newest {
        synced_end.1
    } else {
        segment::data_start(segment::FORMAT_VERSION) as u64
    };
    let cut = u.int_in_range(floor..=len).unwrap_or(len);
    let original = dir.read(&path);
    let mut bytes = original[..cut as usize].to_vec();
    for _ in 0..u.int_in_range(0..=3u8).unwrap_or(0) {
        if cut <= floor {
            break;
        }
        let at = u.int_in_range(floor..=cut - 1).unwrap_or(floor);
        let mask = u.int_in_range(1..=255u8).unwrap_or(1);
        bytes[at as usize] ^= mask;
    }
    // Two flips of one byte can cancel out: the damage starts where the bytes differ.
    let first_damage = bytes
        .iter()
        .zip(&original)
        .position(|(a, b)| a != b)
        .map_or(cut, |at| at as u64);
    dir.write(&path, &bytes);

    let store = Store::open(dir.path(), opts).expect("a crashed store opens");
    // The writes that lie wholly before the first damaged byte survive, and no more.
    let kept = ends
        .iter()
        .take_while(|(seg, end)| *seg < newest || *end <= first_damage)
        .count();
    assert!(
        kept >= synced,
        "a synced write was lost: kept {kept} of {synced} synced"
    );
    let mut model = Model::new();
    for w in &writes[..kept] {
        apply(&mut model, w);
    }
    assert_eq!(
        contents(&store),
        model,
        "cut at {cut}, first damage at {first_damage}"
    );
}

/// Where one record of a write lies.
#[derive(Debug, Clone, Copy)]
struct RecordSpan {
    segment: u64,
    start: u64,
    end: u64,
    /// The write's last record (a single put or delete, or a batch's delete).
    last: bool,
}

/// Writes, a clean close (everything synced, and the index knowing it), then arbitrary bytes
/// flipped anywhere in any segment file, and the index rebuilt from the segments (hints
/// removed, as if lost). The store must open, hold exactly the writes that no damage reached
/// (a damaged record costs its write, and, if it was the write's last record, the next write
/// in its segment too: see docs/guarantees.md), and never a value that was not written.
pub fn damage_skip(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Some(writes) = crash_writes(&mut u) else {
        return;
    };
    let dir = SimDir::new();
    let opts = dir.options(crash_options(&mut u));
    let start = segment::data_start(segment::FORMAT_VERSION) as u64;
    let mut spans: Vec<Vec<RecordSpan>> = Vec::new();
    {
        let store = Store::open(dir.path(), opts.clone()).expect("open");
        for w in &writes {
            let before = store.log_position();
            let lens: Vec<u64> = match w {
                Write::Put(k, Value(v)) => {
                    store.put(&key(*k), v).expect("put");
                    vec![record::padded_len(2, v.len()) as u64]
                }
                Write::Delete(k) => {
                    store.delete(&key(*k)).expect("delete");
                    vec![record::padded_len(2, 0) as u64]
                }
                Write::Batch(a, b, Value(v)) => {
                    let mut batch = WriteBatch::new();
                    batch.put(&key(*a), v).delete(&key(*b));
                    store.write_batch(&batch).expect("batch");
                    vec![
                        record::padded_len(2, v.len()) as u64,
                        record::padded_len(2, 0) as u64,
                    ]
                }
            };
            let (seg, end) = store.log_position();
            let mut at = if before.0 == seg { before.1 } else { start };
            if end == at {
                // A delete of an absent key writes nothing (the writer may have moved to a
                // new segment for it all the same).
                spans.push(Vec::new());
                continue;
            }
            let records = lens
                .iter()
                .enumerate()
                .map(|(i, len)| {
                    let span = RecordSpan {
                        segment: seg,
                        start: at,
                        end: at + len,
                        last: i + 1 == lens.len(),
                    };
                    at += len;
                    span
                })
                .collect();
            assert_eq!(at, end, "the records of a write are contiguous");
            spans.push(records);
        }
        store.close().expect("close");
    }
    let Some((_, newest, _)) = dir.newest_segment() else {
        return;
    };
    let newest_end = spans
        .iter()
        .flatten()
        .filter(|r| r.segment == newest)
        .map(|r| r.end)
        .max()
        .unwrap_or(start);
    dir.os_crash_after_sync(newest_end);
    let mut files: Vec<(u64, PathBuf)> = Vec::new();
    for (name, path) in dir.files() {
        match segment::parse_file_name(&name) {
            Some((id, FileKind::Data, false)) => files.push((id, path)),
            Some((_, FileKind::Hint, false)) => dir.remove(&path),
            _ => {}
        }
    }
    files.sort();
    let originals: Vec<Vec<u8>> = files.iter().map(|(_, p)| dir.read(p)).collect();
    let mut damaged = originals.clone();
    for _ in 0..u.int_in_range(1..=4u8).unwrap_or(1) {
        let Ok(f) = u.choose_index(files.len()) else {
            break;
        };
        let len = damaged[f].len();
        if len == 0 {
            continue;
        }
        let at = u.int_in_range(0..=len - 1).unwrap_or(0);
        damaged[f][at] ^= u.int_in_range(1..=255u8).unwrap_or(1);
    }
    // The writes lost: those with a damaged record, and after a write's damaged last record,
    // the next write with records in the same segment.
    let mut lost = vec![false; writes.len()];
    for (f, (id, path)) in files.iter().enumerate() {
        dir.write(path, &damaged[f]);
        let in_segment: Vec<usize> = (0..writes.len())
            .filter(|&i| spans[i].first().is_some_and(|r| r.segment == *id))
            .collect();
        for pos in (0..damaged[f].len()).filter(|&p| damaged[f][p] != originals[f][p]) {
            let pos = pos as u64;
            for (k, &i) in in_segment.iter().enumerate() {
                if let Some(r) = spans[i].iter().find(|r| r.start <= pos && pos < r.end) {
                    lost[i] = true;
                    if r.last
                        && let Some(&next) = in_segment.get(k + 1)
                    {
                        lost[next] = true;
                    }
                }
            }
        }
    }
    let store = Store::open(dir.path(), opts).expect("a damaged store opens");
    // The writes that left records, less those lost. (A delete of a key absent at the time
    // wrote nothing: had an earlier write been lost, it would not delete what that write
    // held, so it is no part of what the store can hold.)
    let mut model = Model::new();
    for i in (0..writes.len()).filter(|&i| !lost[i] && !spans[i].is_empty()) {
        apply(&mut model, &writes[i]);
    }
    assert_eq!(contents(&store), model, "lost {lost:?}");
}

thread_local! {
    /// Set while `index_decode` works on an index it damaged on purpose, or `hint_decode` on
    /// an index rebuilt from a hint forged to pass its checks: slots that point nowhere, and
    /// live-byte counts that differ from a recount, are expected then, and a bug otherwise.
    pub(crate) static DAMAGED_INDEX: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Sets [`DAMAGED_INDEX`] until dropped.
struct DamagedOnPurpose;

impl DamagedOnPurpose {
    fn new() -> DamagedOnPurpose {
        DAMAGED_INDEX.with(|d| d.set(true));
        DamagedOnPurpose
    }
}

impl Drop for DamagedOnPurpose {
    fn drop(&mut self) {
        DAMAGED_INDEX.with(|d| d.set(false));
    }
}

/// Arbitrary patches to the index table file of a store closed cleanly (so that the next
/// open trusts it): every open, read, write and compaction afterwards returns a value that was
/// stored under that key, nothing, or a typed error. Never a wrong value, never a panic.
pub fn index_decode(data: &[u8]) {
    let dir = SimDir::new();
    let opts = dir.options(Options::default().max_segment_size(4096));
    let truth: Model = {
        let store = Store::open(dir.path(), opts.clone()).expect("open");
        for i in 0..40u8 {
            store
                .put(&key(i % 24), &vec![i; usize::from(i) * 7])
                .expect("put");
        }
        store.delete(&key(3)).expect("delete");
        let truth = contents(&store);
        store.close().expect("close");
        truth
    };
    let (_, table) = dir
        .files()
        .into_iter()
        .find(|(name, _)| crate::index::file::parse_table_name(name).is_some())
        .expect("a table file");
    let mut bytes = dir.read(&table);
    // Patches of 12 bytes each: an offset after the static header (u32) and the 8-byte word
    // written there. Offsets below the slots are made more likely: that is where the header
    // words, the segment table and the op log live.
    for patch in data.chunks_exact(12) {
        let at = u32::from_le_bytes(patch[..4].try_into().expect("4 bytes")) as usize;
        let span = if at.is_multiple_of(2) {
            8192
        } else {
            bytes.len() - 64
        };
        let at = 64 + (at / 2 % span.min(bytes.len() - 64)) / 8 * 8;
        bytes[at..at + 8].copy_from_slice(&patch[4..]);
    }
    dir.write(&table, &bytes);
    let _damaged = DamagedOnPurpose::new();
    let Ok(store) = Store::open(dir.path(), opts) else {
        return;
    };
    let check = |store: &Store, truth: &Model| {
        for i in 0..24u8 {
            if let Ok(Some(v)) = store.get(&key(i)) {
                assert_eq!(Some(&v), truth.get(&key(i)), "a wrong value for {i}");
            }
        }
        for k in store.keys() {
            if let Ok(Some(v)) = store.get(&k) {
                assert_eq!(Some(&v), truth.get(&k), "a wrong value for a listed key");
            }
        }
    };
    check(&store, &truth);
    let _ = store.len();
    let _ = store.stats();
    if store.put(b"after", b"after").is_ok()
        && let Ok(Some(v)) = store.get(b"after")
    {
        assert_eq!(v, b"after");
    }
    let _ = store.compact();
    let mut truth = truth;
    truth.insert(b"after".to_vec(), b"after".to_vec());
    check(&store, &truth);
}

/// Arbitrary bytes as the records of a segment file (after a valid header, or as the whole
/// file): opening must give a typed error or a store whose every read is a value or a typed
/// error. Never a panic. On a simulated disk, as the decode targets need no real files.
pub fn record_decode(data: &[u8]) {
    let _ = record::decode(data);
    let dir = SimDir::new();
    let id = segment::WRITER_ID_STRIDE;
    let mut file = if data.first().is_some_and(|b| b & 1 == 0) {
        segment::encode_header(id, FileKind::Data).to_vec()
    } else {
        Vec::new()
    };
    file.extend_from_slice(data.get(1..).unwrap_or_default());
    dir.write(&segment::path(dir.path(), id), &file);
    let opts = dir.options(Options::default().max_segment_size(4096));
    if let Ok(store) = Store::open(dir.path(), opts) {
        for k in store.keys() {
            let _ = store.get(&k);
        }
        let _ = store.stats();
    }
}

/// Arbitrary bytes as the hint file of a valid segment: the hint is used only if it is
/// valid (else the segment is scanned, and the store holds exactly what was written), and
/// even a hint that passes validation but lies never makes a read return another key's value
/// or bytes never written (hiding a record, it can bring back an older value of its key). On a simulated disk, with the index files removed so that the next open rebuilds
/// the index from hints and segments.
pub fn hint_decode(data: &[u8]) {
    let dir = SimDir::new();
    let opts = dir.options(Options::default().max_segment_size(4096));
    let truth: Model = {
        let store = Store::open(dir.path(), opts.clone()).expect("open");
        for i in 0..8u8 {
            store
                .put(&[b'k', i], &vec![i; usize::from(i) * 3])
                .expect("put");
        }
        store.delete(&[b'k', 3]).expect("delete");
        let truth = contents(&store);
        store.close().expect("close");
        truth
    };
    let (path, id, len) = dir.newest_segment().expect("a segment");
    // An odd first byte: the rest describes entries of a well-formed hint (valid checksum,
    // header and footer) that may lie about every record; else the bytes are the hint.
    let (hint, _forged) = match data.split_first() {
        Some((mode, rest)) if mode & 1 == 1 => {
            (well_formed_hint(rest, id), Some(DamagedOnPurpose::new()))
        }
        _ => (data.to_vec(), None),
    };
    let _ = hint::load(&hint, id, segment::FORMAT_VERSION, len, |_| ());
    dir.write(&path.with_extension("hint"), &hint);
    dir.forget_index();
    let store = match Store::open(dir.path(), opts) {
        Ok(store) => store,
        Err(e) => panic!("a bad hint must fall back to a scan, not fail the open: {e}"),
    };
    assert!(
        store.recovery_report().index_rebuilt.is_some(),
        "the index was rebuilt after the cut"
    );
    // What a hint that passes its checks may still do is hide records: a key whose newer
    // record (an overwrite, a delete) it hides reads as an older value of its own. Never
    // another key's value, never bytes that were not written under the key.
    let written = |k: &[u8]| match k {
        [b'k', i] if *i < 8 => Some(vec![*i; usize::from(*i) * 3]),
        _ => None,
    };
    for k in store.keys() {
        match store.get(&k) {
            Ok(Some(v)) => assert_eq!(Some(v), written(&k), "a value never written for {k:?}"),
            Ok(None) | Err(Error::Corrupt { .. }) => {}
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    if std::env::var_os("LOGCACHE_FUZZ_STATS").is_some() {
        eprintln!("hints used: {}", store.recovery_report().hints_used);
    }
    if store.recovery_report().hints_used == 0 {
        assert_eq!(
            contents(&store),
            truth,
            "a rejected hint falls back to the scan"
        );
    }
}

/// A hint for segment `id` whose entries `data` chooses (flags, expiry, the gap before each
/// record and its length, its key, the end of records), encoded as the engine encodes one and
/// laid out in order inside the segment's 4 KiB, so that it passes every check of its form
/// and reaches the reads that must not believe what it says.
fn well_formed_hint(data: &[u8], id: u64) -> Vec<u8> {
    let mut u = Unstructured::new(data);
    let mut builder = hint::HintBuilder::new(id, segment::FORMAT_VERSION);
    let mut end = segment::data_start(segment::FORMAT_VERSION) as u64;
    let mut keys = Vec::new();
    while !u.is_empty() && keys.len() < 16 {
        let Ok((flags, expires_at, gap, len, key)) = <(u8, u8, u8, u8, u8)>::arbitrary(&mut u)
        else {
            break;
        };
        // Where records may start (a multiple of 8), unless flag bit 1 asks for anywhere.
        let mut offset = end + u64::from(gap % 64);
        if flags & 2 == 0 {
            offset = offset.next_multiple_of(8);
        }
        if offset + u64::from(len) > 4096 {
            break;
        }
        end = offset + u64::from(len);
        // Mostly the keys the store holds (k0..k7), sometimes another one.
        keys.push((
            if key < 200 {
                vec![b'k', key % 9]
            } else {
                vec![key; 3]
            },
            flags & 1 == 1,
            u64::from(expires_at),
            offset as u32,
            u32::from(len),
        ));
    }
    for (key, tombstone, expires_at, offset, len) in &keys {
        builder.push(&hint::HintEntry {
            tombstone: *tombstone,
            expires_at: *expires_at,
            offset: *offset,
            len: *len,
            key,
        });
    }
    builder.finish(end)
}

/// A store directory on a new simulated disk without faults: the fuzz cases need no real
/// files, which makes them tens of times faster (docs/fuzzing.md). Real files are the tests'.
struct SimDir {
    disk: Arc<SimDisk>,
    dir: Dir,
}

impl SimDir {
    fn new() -> SimDir {
        let disk = SimDisk::new(0, SimFaults::default());
        let dir = Dir::new(Arc::clone(&disk) as Arc<dyn Vfs>, "/fuzz/store".into());
        SimDir { disk, dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `base` for a store in this directory: its files on the simulated disk, no background
    /// work (the simulated disk serves one thread).
    fn options(&self, base: Options) -> Options {
        base.vfs(Arc::clone(&self.disk) as Arc<dyn Vfs>)
            .auto_compaction(false)
    }

    /// The files of the directory, by name, in name order.
    fn files(&self) -> Vec<(String, PathBuf)> {
        let mut names: Vec<String> = self
            .disk
            .list(self.path())
            .expect("simulated listing")
            .into_iter()
            .filter_map(|n| n.into_string().ok())
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|n| {
                let path = self.path().join(&n);
                (n, path)
            })
            .collect()
    }

    fn read(&self, path: &Path) -> Vec<u8> {
        self.dir.read(path).expect("simulated read")
    }

    /// Writes `bytes` as the whole file at `path`, durably, its name too.
    fn write(&self, path: &Path, bytes: &[u8]) {
        self.disk
            .create_dir_all(self.path())
            .expect("simulated directory");
        self.dir.write_synced(path, bytes).expect("simulated write");
        self.disk
            .sync_dir(self.path())
            .expect("simulated directory sync");
    }

    fn remove(&self, path: &Path) {
        self.disk.remove_file(path).expect("simulated remove");
        self.disk
            .sync_dir(self.path())
            .expect("simulated directory sync");
    }

    /// Removes every file but segments and hints (the index, its pointer, the locks), so
    /// that the next open rebuilds the index.
    fn forget_index(&self) {
        for (name, path) in self.files() {
            if segment::parse_file_name(&name).is_none() {
                self.remove(&path);
            }
        }
    }

    /// The newest segment file: its path, id and length.
    fn newest_segment(&self) -> Option<(PathBuf, u64, u64)> {
        let (id, path) = self
            .files()
            .into_iter()
            .filter_map(|(name, path)| {
                let (id, kind, temp) = segment::parse_file_name(&name)?;
                (kind == FileKind::Data && !temp).then_some((id, path))
            })
            .max_by_key(|(id, _)| *id)?;
        let len = self.disk.open(&path, Open::Read).ok()?.size().ok()?;
        Some((path, id, len))
    }

    /// [`simulate_os_crash_after_sync`] on this directory.
    fn os_crash_after_sync(&self, synced: u64) {
        os_crash_in(&self.dir, synced);
    }
}
