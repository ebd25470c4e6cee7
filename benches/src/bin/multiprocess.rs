//! Several processes on one store: 90% random get, 10% put, against diskcache in the same run.
//!
//! ```text
//! cargo run --release -p logcache-benches --bin multiprocess -- [KEYS] [SECONDS] [ROUNDS]
//! ```
//! Loads KEYS (default 100,000) 16-byte keys with 100-byte values into a store, then runs
//! ROUNDS (default 3) rounds of 1, 2 and 4 processes (this binary re-executed) on it for
//! SECONDS (default 3) each, and reports each count's median: every process
//! opens the store and loops over a random key, 9 gets for each put, counting operations. The
//! same is run on Python's diskcache (default settings, one `Cache` per process through
//! `multiprocessing`) by `diskcache_multiprocess.py`, if `python3 -c "import diskcache"`
//! works. Prints aggregate operations per second and the ratios.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use logcache_benches::{Rng, key16};
use logcache_engine::{Options, Store};

const ROLE: &str = "LOGCACHE_BENCH_ROLE";
const VALUE_LEN: usize = 100;

fn worker(dir: &Path, keys: usize, seconds: f64, seed: u64) -> u64 {
    let store = Store::open(dir, Options::default()).unwrap();
    let mut rng = Rng::new(seed);
    let value = vec![7u8; VALUE_LEN];
    let put_every: u64 =
        std::env::var("LOGCACHE_BENCH_PUT_EVERY").map_or(10, |v| v.parse().unwrap());
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut ops = 0u64;
    while Instant::now() < deadline {
        for _ in 0..100 {
            let k = key16((rng.next_u64() % keys as u64) as usize);
            if put_every > 0 && ops % put_every == put_every - 1 {
                store.put(&k, &value).unwrap();
            } else {
                std::hint::black_box(store.get(&k).unwrap());
            }
            ops += 1;
        }
    }
    ops
}

fn run_logcache(dir: &Path, keys: usize, seconds: f64, processes: usize) -> f64 {
    let children: Vec<_> = (0..processes)
        .map(|p| {
            Command::new(std::env::current_exe().unwrap())
                .env(ROLE, "worker")
                .args([
                    dir.to_str().unwrap(),
                    &keys.to_string(),
                    &seconds.to_string(),
                    &(p + 1).to_string(),
                ])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let ops: u64 = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            assert!(out.status.success());
            String::from_utf8(out.stdout)
                .unwrap()
                .trim()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    ops as f64 / seconds
}

fn run_diskcache(dir: &Path, keys: usize, seconds: f64, processes: usize) -> Option<f64> {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/multiprocess/diskcache_multiprocess.py"
    );
    let out = Command::new("python3")
        .args([
            script,
            dir.to_str().unwrap(),
            &keys.to_string(),
            &seconds.to_string(),
            &processes.to_string(),
        ])
        .stderr(Stdio::inherit())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}

fn main() {
    if std::env::var(ROLE).as_deref() == Ok("worker") {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let ops = worker(
            Path::new(&args[0]),
            args[1].parse().unwrap(),
            args[2].parse().unwrap(),
            args[3].parse().unwrap(),
        );
        println!("{ops}");
        return;
    }
    let mut args = std::env::args().skip(1);
    let keys: usize = args.next().map_or(100_000, |a| a.parse().expect("KEYS"));
    let seconds: f64 = args.next().map_or(3.0, |a| a.parse().expect("SECONDS"));
    let rounds: usize = args.next().map_or(3, |a| a.parse().expect("ROUNDS"));
    let base = std::env::var("LOGCACHE_BENCH_DIR").unwrap_or_else(|_| "target".into());
    std::fs::create_dir_all(&base).unwrap();
    let tmp = tempfile::tempdir_in(&base).unwrap();
    let dir = tmp.path().join("store");
    {
        let store = Store::open(&dir, Options::default()).unwrap();
        let value = vec![7u8; VALUE_LEN];
        for i in 0..keys {
            store.put(&key16(i), &value).unwrap();
        }
        store.close().unwrap();
    }
    println!(
        "Command: cargo run --release -p logcache-benches --bin multiprocess -- {keys} {seconds} {rounds}"
    );
    println!(
        "Workload: {keys} keys × {VALUE_LEN} B, random keys, 9 gets per put, {seconds} s per run, aggregate over all processes; logcache: median (range) of {rounds} rounds of 1, 2 and 4 processes in turn.\n"
    );
    println!(
        "| processes | logcache ops/s | × 1 process | diskcache ops/s | × 1 process | logcache / diskcache |"
    );
    println!("|---|---|---|---|---|---|");
    // Rounds of 1, 2 and 4 processes in turn on the same store, so that each count meets
    // the background work (hint files, compaction of the segments the puts make dead) that
    // the runs before it leave, as a long-running store would: run in one order only, the
    // first compaction falls into the 2-process run.
    let counts = [1usize, 2, 4];
    let mut runs: Vec<Vec<f64>> = vec![Vec::new(); counts.len()];
    for _ in 0..rounds {
        for (c, &processes) in counts.iter().enumerate() {
            runs[c].push(run_logcache(&dir, keys, seconds, processes));
        }
    }
    let one = median(&runs[0]);
    let mut one_dc = None;
    for (c, &processes) in counts.iter().enumerate() {
        let ops = median(&runs[c]);
        let (low, high) = runs[c]
            .iter()
            .fold((f64::MAX, 0.0f64), |(l, h), &r| (l.min(r), h.max(r)));
        let dc_dir = tmp.path().join(format!("diskcache-{processes}"));
        let dc = run_diskcache(&dc_dir, keys, seconds, processes);
        if processes == 1 {
            one_dc = dc;
        }
        let dc_cells = match (dc, one_dc) {
            (Some(d), Some(d1)) => format!("{d:.0} | {:.2} | {:.1}", d / d1, ops / d),
            _ => "not run (python3 with diskcache not found) | | ".to_string(),
        };
        println!(
            "| {processes} | {ops:.0} ({low:.0}–{high:.0}) | {:.2} | {dc_cells} |",
            ops / one
        );
    }
}

fn median(runs: &[f64]) -> f64 {
    let mut sorted = runs.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}
