//! The engine against the raw-disk limit, in one run.
//!
//! ```text
//! cargo run --release -p logcache-benches --bin engine -- [KEYS] [REPETITIONS]
//! ```
//! Sequential put of KEYS (default 1,000,000) 16-byte keys with 100-byte values
//! (`Durability::None`, then one flush) against a buffered `std::fs::File` append of the same
//! bytes (and the same load into a store opened with `Options::exclusive`, which skips the
//! per-write cross-process lock); random gets of all keys against a `HashMap` lookup with a
//! value copy; open time of the closed store (the index is mapped and checked) against a
//! rebuild from the segments (the `INDEX` file removed, as a missing or untrusted index
//! does); index bytes per key (its file, and heap); durable puts (fdatasync each) from 1 and 4
//! threads, the latter sharing fsyncs through group commit, against the raw limit: 100-byte
//! `pwrite`s into a preallocated file, each followed by `fdatasync`. Each figure is the
//! median of REPETITIONS (default 3) runs, with min and max. Files go to a temporary directory
//! under `$LOGCACHE_BENCH_DIR` (default `target/`), on the disk, not tmpfs.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::thread;

use logcache_benches::{CountingAlloc, Rng, Spread, key16, ops_per_sec, time};
use logcache_engine::{Durability, Options, Store};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const VALUE_LEN: usize = 100;
/// Bytes of one engine record: 21-byte header, key, value.
const RECORD_LEN: usize = 21 + 16 + VALUE_LEN;
const DURABLE_WRITES: usize = 2000;

struct Workload {
    keys: Vec<[u8; 16]>,
    values: Vec<Vec<u8>>,
    read_order: Vec<usize>,
}

impl Workload {
    fn new(n: usize) -> Workload {
        let mut rng = Rng::new(0x10_9cac4e);
        Workload {
            keys: (0..n).map(key16).collect(),
            values: (0..n).map(|_| rng.bytes(VALUE_LEN)).collect(),
            read_order: rng.permutation(n),
        }
    }
}

#[derive(Default)]
struct Samples {
    raw_append: Vec<f64>,
    put: Vec<f64>,
    put_exclusive: Vec<f64>,
    get: Vec<f64>,
    rebuild_ms: Vec<f64>,
    index_file_per_key: Vec<f64>,
    raw_sync: Vec<f64>,
    hashmap_get: Vec<f64>,
    open_ms: Vec<f64>,
    index_bytes_per_key: Vec<f64>,
    sync_1t: Vec<f64>,
    sync_4t: Vec<f64>,
}

fn raw_append(dir: &Path, w: &Workload) -> f64 {
    let header = [0u8; RECORD_LEN - 16 - VALUE_LEN];
    let (d, ()) = time(|| {
        let file = File::create(dir.join("raw.log")).unwrap();
        let mut out = BufWriter::with_capacity(256 << 10, file);
        for (k, v) in w.keys.iter().zip(&w.values) {
            out.write_all(&header).unwrap();
            out.write_all(k).unwrap();
            out.write_all(v).unwrap();
        }
        out.flush().unwrap();
    });
    std::fs::remove_file(dir.join("raw.log")).unwrap();
    ops_per_sec(w.keys.len(), d)
}

fn options(durability: Durability) -> Options {
    Options::default().durability(durability)
}

/// Loads the keys into a new store; returns puts/s.
fn put_all(dir: &Path, w: &Workload, exclusive: bool) -> f64 {
    let store = Store::open(dir, options(Durability::None).exclusive(exclusive)).unwrap();
    let (d, ()) = time(|| {
        for (k, v) in w.keys.iter().zip(&w.values) {
            store.put(k, v).unwrap();
        }
        store.flush().unwrap();
    });
    store.close().unwrap();
    ops_per_sec(w.keys.len(), d)
}

/// Reopens the loaded store; returns it, the open time and the index's heap bytes per key.
fn reopen(dir: &Path, n: usize) -> (Store, f64, f64) {
    let before = CountingAlloc::live_bytes();
    let (d, store) = time(|| Store::open(dir, options(Durability::None)).unwrap());
    let heap = CountingAlloc::live_bytes() - before;
    assert_eq!(store.len(), n);
    (store, d.as_secs_f64() * 1e3, heap as f64 / n as f64)
}

/// Opens the store after removing its index, which makes open rebuild it; returns ms.
fn rebuild(dir: &Path, n: usize) -> f64 {
    std::fs::remove_file(dir.join("INDEX")).unwrap();
    let (d, store) = time(|| Store::open(dir, options(Durability::None)).unwrap());
    assert_eq!(store.len(), n);
    assert!(store.recovery_report().index_rebuilt.is_some());
    d.as_secs_f64() * 1e3
}

/// `DURABLE_WRITES` 100-byte `pwrite`s into a preallocated file, each followed by
/// `fdatasync`: what a durable append costs at least. Returns writes/s.
fn raw_durable_writes(dir: &Path, w: &Workload) -> f64 {
    let path = dir.join("raw-sync.log");
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let len = (DURABLE_WRITES * RECORD_LEN) as u64;
    file.set_len(len).unwrap();
    file.sync_all().unwrap();
    let (d, ()) = time(|| {
        for (i, v) in w.values[..DURABLE_WRITES].iter().enumerate() {
            file.write_all_at(v, (i * RECORD_LEN) as u64).unwrap();
            file.sync_data().unwrap();
        }
    });
    std::fs::remove_file(&path).unwrap();
    ops_per_sec(DURABLE_WRITES, d)
}

fn get_all(store: &Store, w: &Workload) -> f64 {
    let (d, ()) = time(|| {
        for &i in &w.read_order {
            let v = store.get(&w.keys[i]).unwrap().unwrap();
            assert_eq!(v.len(), VALUE_LEN);
            black_box(v);
        }
    });
    ops_per_sec(w.read_order.len(), d)
}

fn hashmap_get_all(w: &Workload) -> f64 {
    let map: HashMap<[u8; 16], Vec<u8>> = w
        .keys
        .iter()
        .copied()
        .zip(w.values.iter().cloned())
        .collect();
    let (d, ()) = time(|| {
        for &i in &w.read_order {
            black_box(map.get(&w.keys[i]).unwrap().clone());
        }
    });
    ops_per_sec(w.read_order.len(), d)
}

/// Durable puts from `threads` threads, `DURABLE_WRITES` in all; returns puts/s.
fn durable_puts(dir: &Path, threads: usize, w: &Workload) -> f64 {
    let store = Arc::new(Store::open(dir, options(Durability::Sync)).unwrap());
    let per_thread = DURABLE_WRITES / threads;
    let (d, ()) = time(|| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let store = Arc::clone(&store);
                let values = w.values[..per_thread].to_vec();
                thread::spawn(move || {
                    for (i, v) in values.iter().enumerate() {
                        store.put(&key16(t * per_thread + i), v).unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    });
    ops_per_sec(per_thread * threads, d)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map_or(1_000_000, |a| a.parse().expect("KEYS"));
    let reps: usize = args.next().map_or(3, |a| a.parse().expect("REPETITIONS"));
    let base = std::env::var("LOGCACHE_BENCH_DIR").unwrap_or_else(|_| "target".into());
    std::fs::create_dir_all(&base).unwrap();
    let w = Workload::new(n);
    let mut s = Samples::default();
    for rep in 0..reps {
        eprintln!("repetition {}/{reps}", rep + 1);
        let tmp = tempfile::tempdir_in(&base).unwrap();
        s.raw_append.push(raw_append(tmp.path(), &w));
        let store_dir = tmp.path().join("store");
        s.put_exclusive
            .push(put_all(&tmp.path().join("exclusive"), &w, true));
        s.put.push(put_all(&store_dir, &w, false));
        let (store, open_ms, per_key) = reopen(&store_dir, n);
        s.open_ms.push(open_ms);
        s.index_bytes_per_key.push(per_key);
        s.index_file_per_key
            .push(store.stats().index_bytes as f64 / n as f64);
        s.get.push(get_all(&store, &w));
        drop(store);
        s.rebuild_ms.push(rebuild(&store_dir, n));
        s.raw_sync.push(raw_durable_writes(tmp.path(), &w));
        s.hashmap_get.push(hashmap_get_all(&w));
        s.sync_1t
            .push(durable_puts(&tmp.path().join("sync1"), 1, &w));
        s.sync_4t
            .push(durable_puts(&tmp.path().join("sync4"), 4, &w));
    }

    let m = |v: &[f64]| Spread::of(v);
    let (put, raw, get, hm) = (m(&s.put), m(&s.raw_append), m(&s.get), m(&s.hashmap_get));
    let (s1, s4, raw_sync) = (m(&s.sync_1t), m(&s.sync_4t), m(&s.raw_sync));
    let (open, rebuilt) = (m(&s.open_ms), m(&s.rebuild_ms));
    let put_x = m(&s.put_exclusive);
    println!(
        "Machine: {} cores, {}",
        thread::available_parallelism().map_or(0, |p| p.get()),
        cpu_model()
    );
    println!("Command: cargo run --release -p logcache-benches --bin engine -- {n} {reps}");
    println!("Figures: median (min–max) of {reps} runs.\n");
    println!("| workload | logcache | reference | logcache / reference |");
    println!("|---|---|---|---|");
    println!(
        "| sequential put, {n} keys (16 B key, 100 B value), `Durability::None` | {} Mops/s | buffered `File` append of the same bytes: {} Mops/s | {:.2} |",
        put.show(1e6, 2),
        raw.show(1e6, 2),
        put.median / raw.median
    );
    println!(
        "| the same, `Options::exclusive` (no per-write file lock) | {} Mops/s | buffered append: {} Mops/s | {:.2} |",
        put_x.show(1e6, 2),
        raw.show(1e6, 2),
        put_x.median / raw.median
    );
    println!(
        "| random get of all {n} keys | {} Mops/s | `HashMap` get + value copy: {} Mops/s | {:.2} |",
        get.show(1e6, 2),
        hm.show(1e6, 2),
        get.median / hm.median
    );
    println!(
        "| open ({n} keys, closed cleanly: index mapped and checked) | {} ms | rebuild from the segments (`INDEX` removed): {} ms | {:.4} |",
        open.show(1.0, 2),
        rebuilt.show(1.0, 0),
        open.median / rebuilt.median
    );
    println!(
        "| index per key | file {} B, heap {} B | key 16 B + value 100 B | |",
        m(&s.index_file_per_key).show(1.0, 1),
        m(&s.index_bytes_per_key).show(1.0, 1)
    );
    println!(
        "| durable put (fdatasync each), 1 thread, {DURABLE_WRITES} puts | {} ops/s | 100-byte `pwrite` + `fdatasync` into a preallocated file: {} ops/s | {:.2} |",
        s1.show(1.0, 0),
        raw_sync.show(1.0, 0),
        s1.median / raw_sync.median
    );
    println!(
        "| durable put, 4 threads (group commit), {DURABLE_WRITES} puts | {} ops/s | 1 thread: {} ops/s | {:.2} |",
        s4.show(1.0, 0),
        s1.show(1.0, 0),
        s4.median / s1.median
    );
}
