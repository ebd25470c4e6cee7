//! logcache side by side with sled, redb and fjall, in one run.
//!
//! ```text
//! cargo run --release -p logcache-peers -- [KEYS] [VALUE_SIZE] [REPETITIONS]
//! ```
//! For each engine: bulk load of KEYS (default 1,000,000) 16-byte keys in batches of 1,000,
//! made durable at the end; random reads of present keys; random reads of missing keys; 1,000
//! individual durable writes (fsync each); 1,000 durable batches of 100 writes; open time of
//! the loaded store; disk bytes. Median (min–max) of REPETITIONS runs (default 3), as ops/s and
//! as a ratio to logcache. Files go under `$LOGCACHE_BENCH_DIR` (default `target/`).

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use logcache_benches::{Rng, Spread, key16, ops_per_sec, time};
use redb::ReadableDatabase;

const BATCH: usize = 1000;
const DURABLE_WRITES: usize = 1000;
const DURABLE_BATCHES: usize = 1000;
const DURABLE_BATCH_SIZE: usize = 100;

/// One engine under test.
trait Engine {
    const NAME: &'static str;
    fn open(dir: &Path) -> Self;
    /// Writes `items` in one batch; durable only if `sync`.
    fn write_batch(&self, items: &[([u8; 16], &[u8])], sync: bool);
    /// One durable write.
    fn put_durable(&self, key: &[u8; 16], value: &[u8]);
    fn get(&self, key: &[u8; 16]) -> Option<Vec<u8>>;
    /// Makes everything written durable.
    fn sync(&self);
}

struct Logcache(logcache_engine::Store);

impl Engine for Logcache {
    const NAME: &'static str = "logcache";
    fn open(dir: &Path) -> Self {
        let opts =
            logcache_engine::Options::default().durability(logcache_engine::Durability::None);
        Logcache(logcache_engine::Store::open(dir, opts).unwrap())
    }
    fn write_batch(&self, items: &[([u8; 16], &[u8])], sync: bool) {
        let mut batch = logcache_engine::WriteBatch::new();
        for (k, v) in items {
            batch.put(k, v);
        }
        self.0.write_batch(&batch).unwrap();
        if sync {
            self.0.sync().unwrap();
        }
    }
    fn put_durable(&self, key: &[u8; 16], value: &[u8]) {
        self.0.put(key, value).unwrap();
        self.0.sync().unwrap();
    }
    fn get(&self, key: &[u8; 16]) -> Option<Vec<u8>> {
        self.0.get(key).unwrap()
    }
    fn sync(&self) {
        self.0.sync().unwrap();
    }
}

struct Sled(sled::Db);

impl Engine for Sled {
    const NAME: &'static str = "sled";
    fn open(dir: &Path) -> Self {
        Sled(sled::open(dir).unwrap())
    }
    fn write_batch(&self, items: &[([u8; 16], &[u8])], sync: bool) {
        let mut batch = sled::Batch::default();
        for (k, v) in items {
            batch.insert(&k[..], *v);
        }
        self.0.apply_batch(batch).unwrap();
        if sync {
            self.0.flush().unwrap();
        }
    }
    fn put_durable(&self, key: &[u8; 16], value: &[u8]) {
        self.0.insert(key, value).unwrap();
        self.0.flush().unwrap();
    }
    fn get(&self, key: &[u8; 16]) -> Option<Vec<u8>> {
        self.0.get(key).unwrap().map(|v| v.to_vec())
    }
    fn sync(&self) {
        self.0.flush().unwrap();
    }
}

const TABLE: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("kv");

struct Redb(redb::Database);

impl Engine for Redb {
    const NAME: &'static str = "redb";
    fn open(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let db = redb::Database::create(dir.join("db.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(TABLE).unwrap();
        txn.commit().unwrap();
        Redb(db)
    }
    fn write_batch(&self, items: &[([u8; 16], &[u8])], sync: bool) {
        let mut txn = self.0.begin_write().unwrap();
        if !sync {
            txn.set_durability(redb::Durability::None).unwrap();
        }
        {
            let mut table = txn.open_table(TABLE).unwrap();
            for (k, v) in items {
                table.insert(&k[..], *v).unwrap();
            }
        }
        txn.commit().unwrap();
    }
    fn put_durable(&self, key: &[u8; 16], value: &[u8]) {
        self.write_batch(&[(*key, value)], true);
    }
    fn get(&self, key: &[u8; 16]) -> Option<Vec<u8>> {
        let txn = self.0.begin_read().unwrap();
        let table = txn.open_table(TABLE).unwrap();
        table.get(&key[..]).unwrap().map(|v| v.value().to_vec())
    }
    fn sync(&self) {
        // An empty durable commit makes the earlier non-durable ones durable.
        self.write_batch(&[], true);
    }
}

struct Fjall {
    keyspace: fjall::Keyspace,
    part: fjall::PartitionHandle,
}

impl Engine for Fjall {
    const NAME: &'static str = "fjall";
    fn open(dir: &Path) -> Self {
        let keyspace = fjall::Config::new(dir).open().unwrap();
        let part = keyspace
            .open_partition("kv", fjall::PartitionCreateOptions::default())
            .unwrap();
        Fjall { keyspace, part }
    }
    fn write_batch(&self, items: &[([u8; 16], &[u8])], sync: bool) {
        let mut batch = self.keyspace.batch();
        for (k, v) in items {
            batch.insert(&self.part, &k[..], *v);
        }
        batch.commit().unwrap();
        if sync {
            self.sync();
        }
    }
    fn put_durable(&self, key: &[u8; 16], value: &[u8]) {
        self.part.insert(key, value).unwrap();
        self.sync();
    }
    fn get(&self, key: &[u8; 16]) -> Option<Vec<u8>> {
        self.part.get(key).unwrap().map(|v| v.to_vec())
    }
    fn sync(&self) {
        self.keyspace.persist(fjall::PersistMode::SyncAll).unwrap();
    }
}

/// Figures of one run of one engine.
#[derive(Default)]
struct Run {
    load: f64,
    read_hit: f64,
    read_miss: f64,
    durable_put: f64,
    durable_batch: f64,
    open_ms: f64,
    disk_mb: f64,
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let meta = e.metadata().unwrap();
        total += if meta.is_dir() {
            dir_bytes(&e.path())
        } else {
            meta.len()
        };
    }
    total
}

fn run_engine<E: Engine>(base: &Path, n: usize, value_len: usize) -> Run {
    let tmp = tempfile::tempdir_in(base).unwrap();
    let dir = tmp.path().join(E::NAME);
    let mut rng = Rng::new(11);
    let value = rng.bytes(value_len);
    let order = rng.permutation(n);
    let mut r = Run::default();
    {
        let db = E::open(&dir);
        let (d, ()) = time(|| {
            for chunk in (0..n).collect::<Vec<_>>().chunks(BATCH) {
                let items: Vec<([u8; 16], &[u8])> =
                    chunk.iter().map(|&i| (key16(i), &value[..])).collect();
                db.write_batch(&items, false);
            }
            db.sync();
        });
        r.load = ops_per_sec(n, d);
        let (d, ()) = time(|| {
            for &i in &order {
                black_box(db.get(&key16(i)).expect("loaded"));
            }
        });
        r.read_hit = ops_per_sec(n, d);
        let (d, ()) = time(|| {
            for &i in &order {
                assert!(db.get(&key16(n + i)).is_none());
            }
        });
        r.read_miss = ops_per_sec(n, d);
        let (d, ()) = time(|| {
            for i in 0..DURABLE_WRITES {
                db.put_durable(&key16(2 * n + i), &value);
            }
        });
        r.durable_put = ops_per_sec(DURABLE_WRITES, d);
        let (d, ()) = time(|| {
            for b in 0..DURABLE_BATCHES {
                let items: Vec<([u8; 16], &[u8])> = (0..DURABLE_BATCH_SIZE)
                    .map(|j| (key16(3 * n + b * DURABLE_BATCH_SIZE + j), &value[..]))
                    .collect();
                db.write_batch(&items, true);
            }
        });
        r.durable_batch = ops_per_sec(DURABLE_BATCHES * DURABLE_BATCH_SIZE, d);
    }
    r.disk_mb = dir_bytes(&dir) as f64 / 1e6;
    let (d, db) = time(|| E::open(&dir));
    r.open_ms = d.as_secs_f64() * 1e3;
    assert!(
        db.get(&key16(n - 1)).is_some(),
        "{} reopened with its data",
        E::NAME
    );
    r
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map_or(1_000_000, |a| a.parse().expect("KEYS"));
    let value_len: usize = args.next().map_or(100, |a| a.parse().expect("VALUE_SIZE"));
    let reps: usize = args.next().map_or(3, |a| a.parse().expect("REPETITIONS"));
    let base = std::path::PathBuf::from(
        std::env::var("LOGCACHE_BENCH_DIR").unwrap_or_else(|_| "target".into()),
    );
    std::fs::create_dir_all(&base).unwrap();
    let mut results: Vec<(&str, Vec<Run>)> = vec![
        (Logcache::NAME, Vec::new()),
        (Sled::NAME, Vec::new()),
        (Redb::NAME, Vec::new()),
        (Fjall::NAME, Vec::new()),
    ];
    for rep in 0..reps {
        for (name, runs) in &mut results {
            eprintln!("repetition {}/{reps}: {name}", rep + 1);
            let run = match *name {
                "logcache" => run_engine::<Logcache>(&base, n, value_len),
                "sled" => run_engine::<Sled>(&base, n, value_len),
                "redb" => run_engine::<Redb>(&base, n, value_len),
                _ => run_engine::<Fjall>(&base, n, value_len),
            };
            runs.push(run);
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    println!("Command: cargo run --release -p logcache-peers -- {n} {value_len} {reps}");
    println!(
        "{n} keys of 16 B, values of {value_len} B; median (min–max) of {reps} runs; ratio = engine / logcache\n"
    );
    type Metric = (&'static str, fn(&Run) -> f64, f64, &'static str);
    let metrics: [Metric; 7] = [
        (
            "bulk load (batches of 1,000, one sync at the end)",
            |r| r.load,
            1e6,
            "Mops/s",
        ),
        ("random read, present keys", |r| r.read_hit, 1e6, "Mops/s"),
        ("random read, missing keys", |r| r.read_miss, 1e6, "Mops/s"),
        (
            "durable single write (fsync each)",
            |r| r.durable_put,
            1.0,
            "ops/s",
        ),
        ("durable batches of 100", |r| r.durable_batch, 1e3, "kops/s"),
        ("open the loaded store", |r| r.open_ms, 1.0, "ms"),
        ("disk use after the run", |r| r.disk_mb, 1.0, "MB"),
    ];
    print!("| workload |");
    for (name, _) in &results {
        print!(" {name} |");
    }
    println!();
    println!("|---|{}", "---|".repeat(results.len()));
    for (label, f, scale, unit) in metrics {
        let ours = Spread::of(&results[0].1.iter().map(f).collect::<Vec<_>>()).median;
        print!("| {label} ({unit}) |");
        for (_, runs) in &results {
            let s = Spread::of(&runs.iter().map(f).collect::<Vec<_>>());
            print!(
                " {} ×{:.2} |",
                s.show(scale, if scale == 1.0 { 0 } else { 2 }),
                s.median / ours
            );
        }
        println!();
    }
}
