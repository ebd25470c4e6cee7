//! Compaction, hint files and latency under compaction, in one run.
//!
//! ```text
//! cargo run --release -p logcache-benches --bin compaction -- \
//!     [--keys N] [--keys-4k N] [--open-keys N,N] [--latency-mb MB] [--plots DIR]
//! ```
//! - Overwrite workload, for 100-byte and 4 KiB values: load `--keys` (default 1,000,000;
//!   `--keys-4k` for the 4 KiB run, same default) 16-byte keys, then overwrite uniformly random
//!   keys four times as many times, so every key is written five times on average and live
//!   records are spread over every segment. Then a full `Store::compact()`, against a raw
//!   sequential copy (`std::io::copy` + fsync) of the same files; space amplification before and
//!   after; write amplification; open time with hint files and with a full scan.
//! - Open time with and without hints for `--open-keys` (default 1,000,000 and 10,000,000)
//!   keys with 100-byte values.
//! - Put and get latency (p50/p99/max) while a compaction of about `--latency-mb` MB (default
//!   1024) runs, against the same client without compaction.
//! - PNG plots of disk size over time and of latency during compaction into `--plots`
//!   (default `docs/img`).
//!
//! Files go to a temporary directory under `$LOGCACHE_BENCH_DIR` (default `target/`).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use logcache_benches::plot::{Chart, Series, line_chart};
use logcache_benches::{Rng, Spread, key16, time};
use logcache_engine::{CompactionStats, Durability, Options, Store, StoreStats};

const MB: f64 = 1e6;

struct Args {
    keys: usize,
    keys_4k: usize,
    open_keys: Vec<usize>,
    latency_mb: usize,
    plots: PathBuf,
}

fn parse_args() -> Args {
    let mut a = Args {
        keys: 1_000_000,
        keys_4k: 1_000_000,
        open_keys: vec![1_000_000, 10_000_000],
        latency_mb: 1024,
        plots: PathBuf::from("docs/img"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--keys" => a.keys = value.parse().expect("--keys"),
            "--keys-4k" => a.keys_4k = value.parse().expect("--keys-4k"),
            "--open-keys" => {
                a.open_keys = value
                    .split(',')
                    .map(|v| v.parse().expect("--open-keys"))
                    .collect()
            }
            "--latency-mb" => a.latency_mb = value.parse().expect("--latency-mb"),
            "--plots" => a.plots = PathBuf::from(value),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

fn manual(durability: Durability) -> Options {
    Options::default()
        .durability(durability)
        .auto_compaction(false)
}

/// Fills `buf` with a value that depends on the key and the write.
fn fill_value(buf: &mut [u8], key: usize, write: u64) {
    let seed = (key as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ write;
    for (i, chunk) in buf.chunks_mut(8).enumerate() {
        let v = seed.wrapping_add(i as u64).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

/// Writes dirty pages back and drops the page cache, so reads come from the disk (root
/// only; returns false where it is not allowed).
fn drop_caches() -> bool {
    let _ = std::process::Command::new("sync").status();
    fs::write("/proc/sys/vm/drop_caches", "3\n").is_ok()
}

fn data_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "data"))
        .collect();
    v.sort();
    v
}

fn count_ext(dir: &Path, ext: &str) -> usize {
    fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == ext)
        })
        .count()
}

/// Copies every data file of `dir` into `to` with `std::io::copy`, then fsyncs the copies.
fn raw_copy(dir: &Path, to: &Path) -> (Duration, u64) {
    fs::create_dir_all(to).unwrap();
    let (d, bytes) = time(|| {
        let mut bytes = 0;
        for f in data_files(dir) {
            let mut src = fs::File::open(&f).unwrap();
            let mut dst = fs::File::create(to.join(f.file_name().unwrap())).unwrap();
            bytes += std::io::copy(&mut src, &mut dst).unwrap();
            dst.sync_all().unwrap();
        }
        bytes
    });
    fs::remove_dir_all(to).unwrap();
    (d, bytes)
}

/// Median open time in ms over `reps` opens.
fn open_ms(dir: &Path, reps: usize) -> (f64, usize) {
    let mut samples = Vec::new();
    let mut keys = 0;
    for _ in 0..reps {
        let (d, store) = time(|| Store::open(dir, manual(Durability::Flush)).unwrap());
        keys = store.len();
        samples.push(d.as_secs_f64() * 1e3);
        drop(store);
    }
    (Spread::of(&samples).median, keys)
}

fn remove_hints(dir: &Path) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "hint") {
            fs::remove_file(p).unwrap();
        }
    }
}

/// Samples the store's disk bytes every 50 ms until stopped.
struct DiskMonitor {
    stop: Arc<AtomicBool>,
    handle: thread::JoinHandle<Vec<(f64, f64)>>,
}

impl DiskMonitor {
    fn start(store: Arc<Store>, t0: Instant) -> DiskMonitor {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = thread::spawn(move || {
            let mut points = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                points.push((
                    t0.elapsed().as_secs_f64(),
                    store.stats().disk_bytes as f64 / MB,
                ));
                thread::sleep(Duration::from_millis(50));
            }
            points.push((
                t0.elapsed().as_secs_f64(),
                store.stats().disk_bytes as f64 / MB,
            ));
            points
        });
        DiskMonitor { stop, handle }
    }

    fn finish(self) -> Vec<(f64, f64)> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap()
    }
}

struct OverwriteResult {
    keys: usize,
    value_len: usize,
    load_secs: f64,
    user_bytes: u64,
    before: StoreStats,
    after: StoreStats,
    compaction: CompactionStats,
    copy: Duration,
    copy_bytes: u64,
    cold: bool,
    open_hints_ms: f64,
    open_scan_ms: f64,
    disk_over_time: Vec<(f64, f64)>,
    compaction_window: (f64, f64),
}

/// Loads `keys` keys, overwrites random keys `4 × keys` times, then compacts.
fn overwrite_workload(base: &Path, keys: usize, value_len: usize) -> OverwriteResult {
    eprintln!("overwrite workload: {keys} keys x {value_len} B, 5 writes per key on average");
    let tmp = tempfile::tempdir_in(base).unwrap();
    let dir = tmp.path().join("store");
    let store = Arc::new(Store::open(&dir, manual(Durability::None)).unwrap());
    let t0 = Instant::now();
    let monitor = DiskMonitor::start(Arc::clone(&store), t0);
    let mut rng = Rng::new(42);
    let mut value = vec![0u8; value_len];
    let writes = 5 * keys as u64;
    let (load, ()) = time(|| {
        for w in 0..writes {
            let k = if w < keys as u64 {
                w as usize
            } else {
                (rng.next_u64() % keys as u64) as usize
            };
            fill_value(&mut value, k, w);
            store.put(&key16(k), &value).unwrap();
        }
        store.flush().unwrap();
    });
    let user_bytes = writes * (21 + 16 + value_len as u64);
    let before = store.stats();
    let cold = drop_caches();
    let (copy, copy_bytes) = raw_copy(&dir, &tmp.path().join("copy"));
    drop_caches();
    let window_start = t0.elapsed().as_secs_f64();
    let compaction = store.compact().unwrap();
    let window_end = t0.elapsed().as_secs_f64();
    thread::sleep(Duration::from_millis(200));
    let after = store.stats();
    let disk_over_time = monitor.finish();
    Arc::into_inner(store).unwrap().close().unwrap();
    assert_eq!(count_ext(&dir, "hint"), count_ext(&dir, "data"));
    let (open_hints_ms, n1) = open_ms(&dir, 3);
    remove_hints(&dir);
    let (open_scan_ms, n2) = open_ms(&dir, 3);
    assert_eq!((n1, n2), (keys, keys));
    OverwriteResult {
        keys,
        value_len,
        load_secs: load.as_secs_f64(),
        user_bytes,
        before,
        after,
        compaction,
        copy,
        copy_bytes,
        cold,
        open_hints_ms,
        open_scan_ms,
        disk_over_time,
        compaction_window: (window_start, window_end),
    }
}

/// Open time of a store of `keys` 100-byte values, with hint files and with a full scan.
fn open_times(base: &Path, keys: usize) -> (f64, f64, u64) {
    eprintln!("open time: {keys} keys");
    let tmp = tempfile::tempdir_in(base).unwrap();
    let dir = tmp.path().join("store");
    {
        let store = Store::open(&dir, manual(Durability::None)).unwrap();
        let mut value = [0u8; 100];
        for k in 0..keys {
            fill_value(&mut value, k, 0);
            store.put(&key16(k), &value).unwrap();
        }
        store.close().unwrap();
    }
    // The background thread writes the hint files of the sealed segments.
    let auto = Options::default().compaction_interval(Duration::from_millis(10));
    let store = Store::open(&dir, auto).unwrap();
    while count_ext(&dir, "hint") < count_ext(&dir, "data") {
        thread::sleep(Duration::from_millis(20));
    }
    let disk = store.stats().disk_bytes;
    store.close().unwrap();
    let (hints, n1) = open_ms(&dir, 3);
    remove_hints(&dir);
    let (scan, n2) = open_ms(&dir, 3);
    assert_eq!((n1, n2), (keys, keys));
    (hints, scan, disk)
}

#[derive(Default)]
struct Latencies {
    put: Vec<(f64, f64)>,
    get: Vec<(f64, f64)>,
}

fn percentiles(samples: &[(f64, f64)]) -> (f64, f64, f64) {
    let mut v: Vec<f64> = samples.iter().map(|s| s.1).collect();
    v.sort_by(f64::total_cmp);
    let at = |p: f64| v[((v.len() - 1) as f64 * p) as usize];
    (at(0.5), at(0.99), v[v.len() - 1])
}

/// One client thread alternating random gets and puts of 4 KiB values, each timed (µs),
/// until `stop` is set or `max_ops` ops are done.
fn client(store: &Store, keys: usize, t0: Instant, stop: &AtomicBool, max_ops: usize) -> Latencies {
    let mut rng = Rng::new(7);
    let mut out = Latencies::default();
    let mut value = vec![0u8; 4096];
    for i in 0..max_ops {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let k = (rng.next_u64() % keys as u64) as usize;
        let start = Instant::now();
        if i % 2 == 0 {
            std::hint::black_box(store.get(&key16(k)).unwrap());
            out.get.push((
                t0.elapsed().as_secs_f64(),
                start.elapsed().as_secs_f64() * 1e6,
            ));
        } else {
            fill_value(&mut value, k, 1_000_000 + i as u64);
            store.put(&key16(k), &value).unwrap();
            out.put.push((
                t0.elapsed().as_secs_f64(),
                start.elapsed().as_secs_f64() * 1e6,
            ));
        }
    }
    out
}

/// Latency of a client with and without a compaction of about `mb` MB running.
fn latency_under_compaction(base: &Path, mb: usize) -> (Latencies, Latencies, CompactionStats) {
    let keys = mb * 1_000_000 / 4096 / 2;
    eprintln!(
        "latency: {keys} keys x 4 KiB written twice (~{mb} MB), client with and without compaction"
    );
    let tmp = tempfile::tempdir_in(base).unwrap();
    let dir = tmp.path().join("store");
    let store = Arc::new(Store::open(&dir, manual(Durability::Flush)).unwrap());
    let mut value = vec![0u8; 4096];
    let mut rng = Rng::new(3);
    for w in 0..2 * keys {
        let k = if w < keys {
            w
        } else {
            (rng.next_u64() % keys as u64) as usize
        };
        fill_value(&mut value, k, w as u64);
        store.put(&key16(k), &value).unwrap();
    }
    let t0 = Instant::now();
    let stop = AtomicBool::new(false);
    let compactor = {
        let store = Arc::clone(&store);
        thread::spawn(move || store.compact().unwrap())
    };
    let during = thread::scope(|s| {
        let c = s.spawn(|| client(&store, keys, t0, &stop, usize::MAX));
        let stats = compactor.join().unwrap();
        stop.store(true, Ordering::Relaxed);
        (c.join().unwrap(), stats)
    });
    let ops = during.0.get.len() + during.0.put.len();
    let t1 = Instant::now();
    let baseline = client(&store, keys, t1, &AtomicBool::new(false), ops);
    (baseline, during.0, during.1)
}

fn show(p: (f64, f64, f64)) -> String {
    format!("{:.1} / {:.0} / {:.0}", p.0, p.1, p.2)
}

fn main() {
    let args = parse_args();
    let base =
        PathBuf::from(std::env::var("LOGCACHE_BENCH_DIR").unwrap_or_else(|_| "target".into()));
    fs::create_dir_all(&base).unwrap();
    fs::create_dir_all(&args.plots).unwrap();

    // A key count (or size) of 0 skips that part.
    let runs: Vec<OverwriteResult> = [(args.keys, 100), (args.keys_4k, 4096)]
        .into_iter()
        .filter(|&(keys, _)| keys > 0)
        .map(|(keys, value_len)| overwrite_workload(&base, keys, value_len))
        .collect();
    let opens: Vec<(usize, (f64, f64, u64))> = args
        .open_keys
        .iter()
        .map(|&n| (n, open_times(&base, n)))
        .collect();
    let latency = (args.latency_mb > 0).then(|| latency_under_compaction(&base, args.latency_mb));

    println!(
        "Machine: {} cores; command: cargo run --release -p logcache-benches --bin compaction -- --keys {} --keys-4k {} --open-keys {} --latency-mb {}\n",
        thread::available_parallelism().map_or(0, |p| p.get()),
        args.keys,
        args.keys_4k,
        args.open_keys
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(","),
        args.latency_mb
    );
    println!("### Compaction after 5 writes per key\n");
    println!(
        "| values | keys | load (MB/s) | compaction time | compaction MB/s | raw copy MB/s | compaction / raw copy | space amp. before → after | write amp. | open with hints | open by scan |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &runs {
        let c = &r.compaction;
        let secs = c.duration.as_secs_f64();
        let compaction_mbs = c.bytes_read as f64 / MB / secs;
        let copy_mbs = r.copy_bytes as f64 / MB / r.copy.as_secs_f64();
        let amp = |s: &StoreStats| s.disk_bytes as f64 / s.live_bytes as f64;
        let write_amp = (r.user_bytes + c.bytes_written) as f64 / r.user_bytes as f64;
        println!(
            "| {} B | {} | {:.0} | {:.2} s | {:.0} | {:.0} | {:.2} | {:.2} → {:.2} | {:.2} | {:.0} ms | {:.0} ms |",
            r.value_len,
            r.keys,
            r.user_bytes as f64 / MB / r.load_secs,
            secs,
            compaction_mbs,
            copy_mbs,
            compaction_mbs / copy_mbs,
            amp(&r.before),
            amp(&r.after),
            write_amp,
            r.open_hints_ms,
            r.open_scan_ms
        );
    }
    for r in &runs {
        println!(
            "\n{} B values: {:?}; page cache dropped before the copy and the compaction: {}",
            r.value_len, r.compaction, r.cold
        );
    }
    println!("\n### Open time, 100-byte values\n");
    println!("| keys | disk | open with hints | open by full scan | scan / hints |");
    println!("|---|---|---|---|---|");
    for (n, (hints, scan, disk)) in &opens {
        println!(
            "| {n} | {:.0} MB | {hints:.0} ms | {scan:.0} ms | {:.2} |",
            *disk as f64 / MB,
            scan / hints
        );
    }
    for r in &runs {
        let path = args
            .plots
            .join(format!("disk-over-time-{}b.png", r.value_len));
        let (a, b) = r.compaction_window;
        let series = [
            Series {
                label: "disk bytes (MB)".into(),
                points: r.disk_over_time.clone(),
                scatter: false,
            },
            Series {
                label: format!("compaction {a:.1}–{b:.1} s"),
                points: vec![
                    (a, 0.0),
                    (a, r.before.disk_bytes as f64 / MB),
                    (b, r.before.disk_bytes as f64 / MB),
                    (b, 0.0),
                ],
                scatter: false,
            },
        ];
        let title = format!(
            "Disk size: {} keys x {} B, 5 writes per key, then compact()",
            r.keys, r.value_len
        );
        let chart = Chart {
            title: &title,
            x_label: "seconds",
            y_label: "MB on disk",
            log_y: false,
        };
        report_plot(&path, line_chart(&path, &chart, &series));
    }
    let Some((baseline, during, lat_stats)) = latency else {
        return;
    };
    println!("\n### Latency while a compaction runs (µs, p50 / p99 / max)\n");
    println!(
        "Compaction of {:.0} MB took {:.2} s; the client made {} gets and {} puts meanwhile.\n",
        lat_stats.bytes_read as f64 / MB,
        lat_stats.duration.as_secs_f64(),
        during.get.len(),
        during.put.len()
    );
    println!("| op | without compaction | during compaction |");
    println!("|---|---|---|");
    println!(
        "| get | {} | {} |",
        show(percentiles(&baseline.get)),
        show(percentiles(&during.get))
    );
    println!(
        "| put (4 KiB, `Durability::Flush`) | {} | {} |",
        show(percentiles(&baseline.put)),
        show(percentiles(&during.put))
    );

    let path = args.plots.join("latency-during-compaction.png");
    let series = [
        Series {
            label: "get during compaction".into(),
            points: during.get.clone(),
            scatter: true,
        },
        Series {
            label: "put during compaction".into(),
            points: during.put.clone(),
            scatter: true,
        },
    ];
    let chart = Chart {
        title: "Latency of each operation while a compaction runs",
        x_label: "seconds since the compaction started",
        y_label: "µs (log scale)",
        log_y: true,
    };
    report_plot(&path, line_chart(&path, &chart, &series));
}

fn report_plot(path: &Path, result: Result<(), String>) {
    match result {
        Ok(()) => eprintln!("wrote {}", path.display()),
        Err(e) => eprintln!("could not draw {}: {e}", path.display()),
    }
}
