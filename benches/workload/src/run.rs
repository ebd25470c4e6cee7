//! The workloads, run in order on one engine in one process, and the figures they produce.

use std::hint::black_box;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::{Rng, key16, ops_per_sec, time};
use serde::{Deserialize, Serialize};

use crate::engine::{Engine, Key};
use crate::memory::Sampler;

/// Keys per batch in the bulk load and the overwrite load.
pub const BATCH: usize = 1000;
/// Writes per durable batch.
pub const DURABLE_BATCH: usize = 100;
/// Most durable writes (and durable batches) per run.
pub const DURABLE_OPS: usize = 1000;
/// A read or durable-write workload stops after this long (or after its count).
pub const TIME_LIMIT: Duration = Duration::from_secs(2);
/// How long the two threads of the read/write mix run.
pub const MIX_TIME: Duration = Duration::from_secs(3);
/// Bytes the overwrite load writes, at most (and at most one overwrite per loaded key).
pub const OVERWRITE_BYTES: usize = 1 << 30;
/// How long the processes of the multi-process workload run.
pub const PROCESS_MIX_TIME: Duration = Duration::from_secs(3);
/// The numbers of processes the multi-process workload runs.
pub const PROCESS_COUNTS: [usize; 3] = [1, 2, 4];

/// Figures of one run of one engine (throughputs in operations per second).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Run {
    /// Bulk load: batches of [`BATCH`], one sync at the end.
    pub load: f64,
    /// Random reads of loaded keys.
    pub read_hit: f64,
    /// Random reads of keys never written.
    pub read_miss: f64,
    /// Two threads, each 90% reads of loaded keys and 10% overwrites (not durable).
    pub mix: f64,
    /// Single writes, each durable before the next.
    pub durable_put: f64,
    /// Batches of [`DURABLE_BATCH`] writes, each durable (writes per second).
    pub durable_batch: f64,
    /// Random overwrites of loaded keys in batches, with the engine's background work on.
    pub overwrite: f64,
    /// Seconds of the engine's explicit full compaction after the overwrites (0: none).
    pub compact_secs: f64,
    /// Opening the closed store and reading one key, in ms.
    pub open_ms: f64,
    /// Bytes on disk after the bulk load, in MB.
    pub disk_load_mb: f64,
    /// Bytes on disk at the end (after overwrites and compaction), in MB.
    pub disk_end_mb: f64,
    /// Peak resident memory, in MB (file pages mapped by the process included).
    pub peak_rss_mb: f64,
    /// Peak anonymous memory (heap), in MB.
    pub peak_anon_mb: f64,
    /// 1, 2 and 4 processes on the loaded directory, each doing 9 reads for every write
    /// ([`process_mix`]): aggregate ops/s; 0 for an engine one process at a time can open.
    pub processes: [f64; 3],
}

/// What a figure measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Operations per second (higher is better).
    Ops,
    /// Milliseconds.
    Millis,
    /// Seconds (0: not applicable).
    Seconds,
    /// Megabytes (10^6 bytes).
    Megabytes,
}

/// One figure of a [`Run`], as the reports show it.
pub struct Metric {
    /// Label in tables, with its unit.
    pub label: &'static str,
    /// Label in the charts (throughputs only).
    pub short: &'static str,
    /// The figure.
    pub value: fn(&Run) -> f64,
    /// Its unit.
    pub unit: Unit,
    /// Measured by the peer harness's multi-process workload ([`process_mix`] in several
    /// processes), not by [`run`].
    pub processes: bool,
}

/// Every figure of a [`Run`], in report order.
pub const METRICS: &[Metric] = &[
    Metric {
        label: "bulk load, batches of 1,000, one sync at the end (ops/s)",
        short: "bulk load",
        value: |r| r.load,
        unit: Unit::Ops,
        processes: false,
    },
    Metric {
        label: "random read, loaded keys (ops/s)",
        short: "read hit",
        value: |r| r.read_hit,
        unit: Unit::Ops,
        processes: false,
    },
    Metric {
        label: "random read, missing keys (ops/s)",
        short: "read miss",
        value: |r| r.read_miss,
        unit: Unit::Ops,
        processes: false,
    },
    Metric {
        label: "90% read / 10% write, 2 threads (ops/s)",
        short: "90/10 mix",
        value: |r| r.mix,
        unit: Unit::Ops,
        processes: false,
    },
    Metric {
        label: "durable single write, fsync each (ops/s)",
        short: "durable write",
        value: |r| r.durable_put,
        unit: Unit::Ops,
        processes: false,
    },
    Metric {
        label: "durable batches of 100 (writes/s)",
        short: "durable batch",
        value: |r| r.durable_batch,
        unit: Unit::Ops,
        processes: false,
    },
    Metric {
        label: "overwrite load, batches of 1,000 (ops/s)",
        short: "overwrite",
        value: |r| r.overwrite,
        unit: Unit::Ops,
        processes: false,
    },
    Metric {
        label: "1 process on the directory, 90% read / 10% write (ops/s; — one process only)",
        short: "1 process",
        value: |r| r.processes[0],
        unit: Unit::Ops,
        processes: true,
    },
    Metric {
        label: "2 processes on one directory, 90% read / 10% write, in all (ops/s)",
        short: "2 processes",
        value: |r| r.processes[1],
        unit: Unit::Ops,
        processes: true,
    },
    Metric {
        label: "4 processes on one directory, 90% read / 10% write, in all (ops/s)",
        short: "4 processes",
        value: |r| r.processes[2],
        unit: Unit::Ops,
        processes: true,
    },
    Metric {
        label: "full compaction after it (s; — none)",
        short: "",
        value: |r| r.compact_secs,
        unit: Unit::Seconds,
        processes: false,
    },
    Metric {
        label: "disk after the bulk load (MB)",
        short: "",
        value: |r| r.disk_load_mb,
        unit: Unit::Megabytes,
        processes: false,
    },
    Metric {
        label: "disk at the end (MB)",
        short: "",
        value: |r| r.disk_end_mb,
        unit: Unit::Megabytes,
        processes: false,
    },
    Metric {
        label: "open the closed store + first read (ms)",
        short: "",
        value: |r| r.open_ms,
        unit: Unit::Millis,
        processes: false,
    },
    Metric {
        label: "peak resident memory (MB)",
        short: "",
        value: |r| r.peak_rss_mb,
        unit: Unit::Megabytes,
        processes: false,
    },
    Metric {
        label: "peak heap (anonymous) memory (MB)",
        short: "",
        value: |r| r.peak_anon_mb,
        unit: Unit::Megabytes,
        processes: false,
    },
];

/// Values: distinct per key, cut from a pool of random bytes (so they do not compress).
pub struct Values {
    pool: Vec<u8>,
    len: usize,
}

impl Values {
    /// Values of `len` bytes.
    pub fn new(len: usize) -> Values {
        Values {
            pool: Rng::new(7).bytes((1 << 20) + len),
            len,
        }
    }

    /// The value written for key number `i` (on its `round`-th write).
    pub fn of(&self, i: usize, round: usize) -> &[u8] {
        let off = (i.wrapping_mul(2_654_435_761) ^ round.wrapping_mul(40_503)) % (1 << 20);
        &self.pool[off..off + self.len]
    }
}

/// Total bytes of the files under `dir`. A file an engine's background work removes while
/// this walks counts nothing.
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut total = 0;
    for e in entries.flatten() {
        total += match e.metadata() {
            Ok(meta) if meta.is_dir() => dir_bytes(&e.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        };
    }
    total
}

/// Calls `op(i)` for `i` in `0..max_ops` until [`TIME_LIMIT`] has passed; ops per second.
fn bounded(max_ops: usize, mut op: impl FnMut(usize)) -> f64 {
    let start = Instant::now();
    let mut done = 0;
    while done < max_ops {
        let end = (done + 64).min(max_ops);
        for i in done..end {
            op(i);
        }
        done = end;
        if start.elapsed() >= TIME_LIMIT {
            break;
        }
    }
    ops_per_sec(done, start.elapsed())
}

fn items(keys: impl Iterator<Item = usize>, values: &Values, round: usize) -> Vec<(Key, &[u8])> {
    keys.map(|i| (key16(i), values.of(i, round))).collect()
}

/// Runs every workload on engine `E` in `dir` with `n` keys of `value_len`-byte values.
pub fn run<E: Engine>(dir: &Path, n: usize, value_len: usize) -> Run {
    let values = Values::new(value_len);
    let mut rng = Rng::new(11);
    let order = rng.permutation(n);
    let mut r = Run::default();
    let mut db = E::open(dir);
    let sampler = Sampler::start(db.memory_pid());

    let (d, ()) = time(|| {
        for start in (0..n).step_by(BATCH) {
            db.write_batch(&items(start..(start + BATCH).min(n), &values, 0), false);
        }
        db.sync();
    });
    r.load = ops_per_sec(n, d);
    r.disk_load_mb = dir_bytes(dir) as f64 / 1e6;
    db.reindex();

    r.read_hit = bounded(n, |i| {
        black_box(db.get(&key16(order[i])).expect("a loaded key"));
    });
    r.read_miss = bounded(n, |i| {
        assert!(db.get(&key16(n + order[i])).is_none());
    });
    r.mix = mix(&db, n, &values);
    // Each timed phase starts with nothing left for it to flush.
    db.sync();
    db.prepare_durable();
    r.durable_put = bounded(DURABLE_OPS, |i| {
        db.put_durable(&key16(2 * n + i), values.of(i, 0));
    });
    r.durable_batch = DURABLE_BATCH as f64
        * bounded(DURABLE_OPS, |b| {
            let first = 3 * n + b * DURABLE_BATCH;
            db.write_batch(&items(first..first + DURABLE_BATCH, &values, 0), true);
        });

    db.sync();
    let overwrites = n.min(OVERWRITE_BYTES / (16 + value_len)).max(1);
    let targets = rng.permutation(n);
    let (d, ()) = time(|| {
        for chunk in targets[..overwrites].chunks(BATCH) {
            db.write_batch(&items(chunk.iter().copied(), &values, 2), false);
        }
        db.sync();
    });
    r.overwrite = ops_per_sec(overwrites, d);
    let (d, compacted) = time(|| db.compact());
    r.compact_secs = if compacted { d.as_secs_f64() } else { 0.0 };
    db.sync();
    db.reindex();
    assert_eq!(
        db.get(&key16(targets[0])).as_deref(),
        Some(values.of(targets[0], 2)),
        "the overwrite is read back"
    );

    sampler.sample_now();
    db.close();
    r.disk_end_mb = dir_bytes(dir) as f64 / 1e6;
    let (d, db) = time(|| {
        let db = E::open(dir);
        assert!(db.get(&key16(order[0])).is_some(), "reopened with its data");
        db
    });
    r.open_ms = d.as_secs_f64() * 1e3;
    sampler.follow(db.memory_pid());
    sampler.sample_now();
    db.close();
    (r.peak_rss_mb, r.peak_anon_mb) = sampler.finish();
    r
}

/// One process of the multi-process workload, on the `n` keys loaded into `dir`: for
/// [`PROCESS_MIX_TIME`], 9 reads of a random key for every write of one; its ops/s.
pub fn process_mix<E: Engine>(dir: &Path, n: usize, value_len: usize, seed: u64) -> f64 {
    let values = Values::new(value_len);
    let db = E::open(dir);
    let start = Instant::now();
    let done = mix_until(
        &db,
        n,
        &values,
        Rng::new(1000 + seed),
        3,
        start + PROCESS_MIX_TIME,
    );
    let rate = ops_per_sec(done, start.elapsed());
    db.close();
    rate
}

/// 9 reads of a random one of the `n` loaded keys for every write of one (its value of
/// round `round`), in steps of 64 until `deadline`; the operations done.
fn mix_until<E: Engine>(
    db: &E,
    n: usize,
    values: &Values,
    mut rng: Rng,
    round: usize,
    deadline: Instant,
) -> usize {
    let mut done = 0;
    while Instant::now() < deadline {
        for _ in 0..64 {
            let x = rng.next_u64();
            let i = (x >> 8) as usize % n;
            if x.is_multiple_of(10) {
                db.put(&key16(i), values.of(i, round));
            } else {
                black_box(db.get(&key16(i)));
            }
        }
        done += 64;
    }
    done
}

/// Two threads for [`MIX_TIME`], each doing 9 reads of loaded keys for every overwrite.
fn mix<E: Engine>(db: &E, n: usize, values: &Values) -> f64 {
    let total = AtomicUsize::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..2u64 {
            let total = &total;
            s.spawn(move || {
                let done = mix_until(db, n, values, Rng::new(100 + t), 1, start + MIX_TIME);
                total.fetch_add(done, Ordering::Relaxed);
            });
        }
    });
    ops_per_sec(total.into_inner(), start.elapsed())
}
