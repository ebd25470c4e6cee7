//! logcache side by side with sled, redb, fjall, Python's diskcache, Redis over loopback and
//! the raw-disk reference, in one run.
//!
//! ```text
//! cargo run --release -p logcache-peers -- [--keys 1000000] [--sizes 100,4096] [--reps 3]
//! ```
//! Every run of every engine is a process of its own (so peak memory is its own), on a fresh
//! directory under `--dir` (default `target/peers`), and the engines take turns within each
//! repetition. The workloads are in the `logcache-workload` crate; the report (Markdown tables, PNG charts,
//! the JSON of every run) goes to `--out` (default `target/peers`).

mod engines;
mod redis_peer;
mod report;

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::{Parser, Subcommand};

use logcache_workload::{Engine, Run};

/// Every engine the harness knows, in table order.
pub const ENGINES: &[&str] = &[
    "logcache",
    "sled",
    "redb",
    "fjall",
    "diskcache",
    "redis",
    "raw",
];

#[derive(Parser)]
#[command(about = "logcache side by side with its peers on the same workloads")]
struct Args {
    /// Keys loaded into each store.
    #[arg(long, default_value_t = 1_000_000)]
    keys: usize,
    /// Value sizes in bytes, one table each.
    #[arg(long, value_delimiter = ',', default_value = "100,4096")]
    sizes: Vec<usize>,
    /// Repetitions of every run (the tables show median, min and max).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Engines to run (default: all).
    #[arg(long, value_delimiter = ',')]
    engines: Vec<String>,
    /// Where the stores are made (one at a time).
    #[arg(long, default_value = "target/peers")]
    dir: PathBuf,
    /// Where the report goes: peers.md, peers.json and the charts.
    #[arg(long, default_value = "target/peers")]
    out: PathBuf,
    /// Only redraw the report from a peers.json of an earlier run.
    #[arg(long)]
    from: Option<PathBuf>,
    #[command(subcommand)]
    child: Option<Child>,
}

#[derive(Subcommand)]
enum Child {
    /// (Internal) one process of the multi-process workload; prints its ops/s.
    Worker {
        engine: String,
        dir: PathBuf,
        keys: usize,
        value_len: usize,
        seed: u64,
    },
    /// (Internal) one run of one engine; prints its figures as JSON.
    Run {
        engine: String,
        dir: PathBuf,
        keys: usize,
        value_len: usize,
    },
}

fn run_in_process(engine: &str, dir: &Path, n: usize, value_len: usize) -> Run {
    fn go<E: Engine>(dir: &Path, n: usize, value_len: usize) -> Run {
        logcache_workload::run::<E>(dir, n, value_len)
    }
    match engine {
        "logcache" => go::<logcache_workload::Logcache>(dir, n, value_len),
        "sled" => go::<engines::Sled>(dir, n, value_len),
        "redb" => go::<engines::Redb>(dir, n, value_len),
        "fjall" => go::<engines::Fjall>(dir, n, value_len),
        "redis" => go::<redis_peer::Redis>(dir, n, value_len),
        "raw" => go::<engines::Raw>(dir, n, value_len),
        other => panic!("unknown engine {other}"),
    }
}

/// A Python with diskcache: a virtualenv under `base`, made on first use.
fn diskcache_python(base: &Path) -> PathBuf {
    let venv = base.join("venv");
    let python = venv.join("bin/python");
    let ok = |py: &Path| {
        Command::new(py)
            .args(["-c", "import diskcache"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !ok(&python) {
        eprintln!("installing diskcache into {}", venv.display());
        let made = Command::new("python3")
            .arg("-m")
            .arg("venv")
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success())
            && Command::new(venv.join("bin/pip"))
                .args(["install", "-q", "diskcache==5.6.3"])
                .status()
                .is_ok_and(|s| s.success());
        assert!(made && ok(&python), "could not install diskcache with pip");
    }
    python
}

/// The engines whose store several processes may open at once: the multi-process workload
/// runs on them only.
const MULTI_PROCESS: &[&str] = &["logcache", "diskcache"];

/// Aggregate ops/s of `processes` processes of the multi-process workload on `engine`'s
/// store in `dir`, loaded with `n` keys.
fn run_processes(
    engine: &str,
    base: &Path,
    dir: &Path,
    n: usize,
    value_len: usize,
    processes: usize,
) -> f64 {
    let mut command = if engine == "diskcache" {
        let mut c = Command::new(diskcache_python(base));
        c.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/diskcache_bench.py"));
        c.arg(dir).arg(n.to_string()).arg(value_len.to_string());
        c.arg("--processes").arg(processes.to_string());
        c.arg(
            logcache_workload::PROCESS_MIX_TIME
                .as_secs_f64()
                .to_string(),
        );
        c
    } else {
        let mut c = Command::new(std::env::current_exe().unwrap());
        c.args(["worker", engine]).arg(dir);
        c.arg(n.to_string()).arg(value_len.to_string());
        c
    };
    if engine == "diskcache" {
        let out = command.output().expect("start the processes");
        assert!(out.status.success(), "diskcache processes failed");
        return String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    }
    let children: Vec<_> = (0..processes)
        .map(|p| {
            let mut c = Command::new(command.get_program());
            c.args(command.get_args()).arg(p.to_string());
            c.stdout(std::process::Stdio::piped()).spawn().unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            assert!(out.status.success(), "{engine} worker failed");
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse::<f64>()
                .unwrap()
        })
        .sum()
}

/// One run of `engine` in a child process, then the multi-process workload on its store if
/// the engine allows it. Repetition `rep` runs the process counts in an order rotated by
/// `rep`, so that over the repetitions each count meets in turn the background work
/// (compaction of the segments the earlier writes made dead) that the runs before it leave.
fn run_child(engine: &str, base: &Path, n: usize, value_len: usize, rep: usize) -> Run {
    let tmp = tempfile::tempdir_in(base).unwrap();
    let dir = tmp.path().join(engine);
    let mut command = if engine == "diskcache" {
        let mut c = Command::new(diskcache_python(base));
        c.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/diskcache_bench.py"));
        c.arg(&dir).arg(n.to_string()).arg(value_len.to_string());
        c
    } else {
        let mut c = Command::new(std::env::current_exe().unwrap());
        c.args(["run", engine]).arg(&dir);
        c.arg(n.to_string()).arg(value_len.to_string());
        c
    };
    let out = command.output().expect("start a run");
    assert!(
        out.status.success(),
        "{engine} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut run: Run = serde_json::from_slice(&out.stdout).expect("a run's figures");
    if MULTI_PROCESS.contains(&engine) {
        let counts = logcache_workload::PROCESS_COUNTS;
        for i in (0..counts.len()).map(|i| (i + rep) % counts.len()) {
            let p = counts[i];
            eprintln!("  {p} processes");
            run.processes[i] = run_processes(engine, base, &dir, n, value_len, p);
        }
    }
    run
}

fn main() {
    let args = Args::parse();
    match args.child {
        Some(Child::Run {
            engine,
            dir,
            keys,
            value_len,
        }) => {
            let run = run_in_process(&engine, &dir, keys, value_len);
            println!("{}", serde_json::to_string(&run).unwrap());
            return;
        }
        Some(Child::Worker {
            engine,
            dir,
            keys,
            value_len,
            seed,
        }) => {
            assert_eq!(
                engine, "logcache",
                "only logcache runs in several processes here"
            );
            let rate = logcache_workload::process_mix::<logcache_workload::Logcache>(
                &dir, keys, value_len, seed,
            );
            println!("{rate}");
            return;
        }
        None => {}
    }
    let engines: Vec<String> = if args.engines.is_empty() {
        ENGINES.iter().map(|e| e.to_string()).collect()
    } else {
        args.engines.clone()
    };
    std::fs::create_dir_all(&args.out).unwrap();
    let mut results = match &args.from {
        Some(path) => report::Results::load(path),
        None => report::Results::new(args.keys, args.reps),
    };
    std::fs::create_dir_all(&args.dir).unwrap();
    for &size in args.sizes.iter().filter(|_| args.from.is_none()) {
        for rep in 0..args.reps {
            for engine in &engines {
                eprintln!("{size} B, repetition {}/{}: {engine}", rep + 1, args.reps);
                let run = run_child(engine, &args.dir, args.keys, size, rep);
                results.add(size, engine, run);
                results.save(&args.out.join("peers.json"));
            }
        }
    }
    let md = results.markdown(&args.sizes, &engines);
    std::fs::write(args.out.join("peers.md"), &md).unwrap();
    results.charts(&args.out, &args.sizes, &engines);
    print!("{md}");
}
