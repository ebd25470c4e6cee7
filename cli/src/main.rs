//! `logcache`: inspect and maintain a logcache store directory.
//!
//! Exit codes: 0 success; 1 a key was not found, or `verify` found a problem; 2 the store
//! could not be used (missing, locked, corrupt, I/O error) or the arguments were wrong.

use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use logcache_engine::{Durability, Error, Options, Store};
use logcache_workload::Unit;
use serde::{Deserialize, Serialize};

#[derive(Parser)]
#[command(
    name = "logcache",
    version,
    about = "Inspect and maintain a logcache store directory"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Keys, bytes live and dead, segments, what opening repaired.
    Stats { dir: PathBuf },
    /// Print the value of KEY (raw bytes) to stdout; exit 1 if absent.
    Get { dir: PathBuf, key: String },
    /// Store VALUE under KEY; `@path` reads the value from a file, `@-` from stdin.
    Set {
        dir: PathBuf,
        key: String,
        value: String,
        /// Expire after this many seconds.
        #[arg(long)]
        ttl: Option<u64>,
    },
    /// Delete KEY; exit 1 if it was absent.
    Del { dir: PathBuf, key: String },
    /// List the live keys, one a line (non-UTF-8 bytes escaped).
    Keys {
        dir: PathBuf,
        /// Only keys starting with this prefix.
        #[arg(long)]
        prefix: Option<String>,
    },
    /// Rewrite the segments without their dead records.
    Compact { dir: PathBuf },
    /// Check every record's checksum and every hint file; exit 1 if anything is wrong.
    Verify { dir: PathBuf },
    /// Write every live entry to stdout as JSON lines (key and value in base64).
    Export { dir: PathBuf },
    /// Read JSON lines (as written by `export`) from stdin into the store.
    Import { dir: PathBuf },
    /// Run the logcache part of the peer comparison (docs/benchmarks.md) on a temporary
    /// store: load, reads, a 2-thread mix, durable writes, overwrites and compaction, open.
    Bench {
        /// How many keys.
        #[arg(long, default_value_t = 200_000)]
        keys: usize,
        /// Value size in bytes.
        #[arg(long, default_value_t = 100)]
        value_size: usize,
    },
}

/// One exported entry.
#[derive(Serialize, Deserialize)]
struct Line {
    key: String,
    value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at: Option<u64>,
}

/// Why the command failed, and with which exit code.
enum Failure {
    /// Exit 1: a key was absent, or verify found a problem.
    NotFound(String),
    /// Exit 2: the store or the input could not be used.
    Fatal(String),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Fatal(match e {
            Error::Locked(dir) => format!("{} is open in another process (locked)", dir.display()),
            other => other.to_string(),
        })
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::Fatal(e.to_string())
    }
}

fn options() -> Options {
    // A command runs briefly: no background thread, every write handed to the OS.
    Options::default()
        .auto_compaction(false)
        .durability(Durability::Flush)
}

/// Opens an existing store; unlike `Store::open`, a missing directory is an error.
fn open(dir: &Path) -> Result<Store, Failure> {
    if !dir.exists() {
        return Err(Failure::Fatal(format!("{} does not exist", dir.display())));
    }
    Ok(Store::open(dir, options())?)
}

/// A key or value as one printable line: UTF-8 as it is, other bytes as `\xNN`.
fn printable(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\n' => out.push_str("\\n"),
                '\\' => out.push_str("\\\\"),
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

fn read_value(arg: &str) -> Result<Vec<u8>, Failure> {
    match arg.strip_prefix('@') {
        Some("-") => {
            let mut v = Vec::new();
            io::stdin().read_to_end(&mut v)?;
            Ok(v)
        }
        Some(path) => {
            std::fs::read(path).map_err(|e| Failure::Fatal(format!("reading {path}: {e}")))
        }
        None => Ok(arg.as_bytes().to_vec()),
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    let mut out = io::stdout().lock();
    match cli.command {
        Command::Stats { dir } => {
            let store = open(&dir)?;
            let s = store.stats();
            let r = store.recovery_report();
            writeln!(out, "keys          {}", s.keys)?;
            writeln!(out, "segments      {}", s.segments)?;
            writeln!(out, "disk bytes    {}", s.disk_bytes)?;
            writeln!(out, "live bytes    {}", s.live_bytes)?;
            writeln!(out, "dead bytes    {}", s.dead_bytes)?;
            writeln!(out, "hints used    {} of {}", r.hints_used, r.segments)?;
            if let Some(t) = r.torn_tail {
                writeln!(
                    out,
                    "torn tail     {} bytes cut from segment {} at {} ({})",
                    t.bytes, t.segment, t.offset, t.reason
                )?;
            }
        }
        Command::Get { dir, key } => {
            let store = open(&dir)?;
            match store.get(key.as_bytes())? {
                Some(v) => out.write_all(&v)?,
                None => return Err(Failure::NotFound(format!("{key}: not found"))),
            }
        }
        Command::Set {
            dir,
            key,
            value,
            ttl,
        } => {
            let value = read_value(&value)?;
            let store = open_or_create(&dir)?;
            match ttl {
                Some(secs) => {
                    store.put_with_ttl(key.as_bytes(), &value, Duration::from_secs(secs))?
                }
                None => store.put(key.as_bytes(), &value)?,
            }
            store.close()?;
        }
        Command::Del { dir, key } => {
            let store = open(&dir)?;
            let existed = store.delete(key.as_bytes())?;
            store.close()?;
            if !existed {
                return Err(Failure::NotFound(format!("{key}: not found")));
            }
        }
        Command::Keys { dir, prefix } => {
            let store = open(&dir)?;
            let prefix = prefix.unwrap_or_default();
            let mut keys: Vec<Vec<u8>> = store
                .keys()
                .filter(|k| k.starts_with(prefix.as_bytes()))
                .collect();
            keys.sort();
            for k in keys {
                writeln!(out, "{}", printable(&k))?;
            }
        }
        Command::Compact { dir } => {
            let store = open(&dir)?;
            let bar = if io::stderr().is_terminal() {
                let bar = ProgressBar::new(0);
                bar.set_style(
                    ProgressStyle::with_template(
                        "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {eta}",
                    )
                    .expect("a valid template"),
                );
                bar
            } else {
                ProgressBar::hidden()
            };
            let stats = store.compact_with_progress(&|done, total| {
                bar.set_length(total);
                bar.set_position(done);
            })?;
            bar.finish_and_clear();
            store.close()?;
            writeln!(
                out,
                "compacted {} segments into {} in {:.2?}: read {} bytes, wrote {}, reclaimed {}; {} records kept, {} dropped",
                stats.segments_in,
                stats.segments_out,
                stats.duration,
                stats.bytes_read,
                stats.bytes_written,
                stats.bytes_reclaimed,
                stats.records_copied,
                stats.records_dropped
            )?;
        }
        Command::Verify { dir } => {
            if !dir.exists() {
                return Err(Failure::Fatal(format!("{} does not exist", dir.display())));
            }
            let report = logcache_engine::verify(&dir)?;
            writeln!(
                out,
                "{} segments, {} records, {} hint files checked",
                report.segments, report.records, report.hints
            )?;
            for p in &report.problems {
                let note = if p.torn_tail {
                    " (torn tail: opening the store cuts it off)"
                } else {
                    ""
                };
                writeln!(
                    out,
                    "segment {:016x} offset {}: {}{note}",
                    p.segment, p.offset, p.reason
                )?;
            }
            if !report.is_clean() {
                return Err(Failure::NotFound(format!(
                    "{} problem(s) found",
                    report.problems.len()
                )));
            }
            writeln!(out, "ok")?;
        }
        Command::Export { dir } => {
            let store = open(&dir)?;
            let mut keys: Vec<Vec<u8>> = store.keys().collect();
            keys.sort();
            for k in keys {
                let Some((v, expires_at)) = store.get_with_expiry(&k)? else {
                    continue;
                };
                let line = Line {
                    key: BASE64.encode(&k),
                    value: BASE64.encode(&v),
                    expires_at: (expires_at != 0).then_some(expires_at),
                };
                writeln!(
                    out,
                    "{}",
                    serde_json::to_string(&line).expect("plain strings serialize")
                )?;
            }
        }
        Command::Import { dir } => {
            let store = open_or_create(&dir)?;
            let mut count = 0u64;
            for (n, line) in io::stdin().lock().lines().enumerate() {
                let line = line?;
                if line.trim().is_empty() {
                    continue;
                }
                let bad = |what: &str| Failure::Fatal(format!("line {}: {what}", n + 1));
                let entry: Line = serde_json::from_str(&line).map_err(|e| bad(&e.to_string()))?;
                let key = BASE64
                    .decode(&entry.key)
                    .map_err(|_| bad("key is not base64"))?;
                let value = BASE64
                    .decode(&entry.value)
                    .map_err(|_| bad("value is not base64"))?;
                store.put_expiring_at(&key, &value, entry.expires_at.unwrap_or(0))?;
                count += 1;
            }
            store.close()?;
            writeln!(out, "imported {count} entries")?;
        }
        Command::Bench { keys, value_size } => bench(&mut out, keys, value_size)?,
    }
    Ok(())
}

fn open_or_create(dir: &Path) -> Result<Store, Failure> {
    Ok(Store::open(dir, options())?)
}

/// The logcache part of the peer comparison (docs/benchmarks.md), on a temporary store.
fn bench(out: &mut impl Write, n: usize, value_size: usize) -> Result<(), Failure> {
    let dir = tempfile::tempdir()?;
    writeln!(
        out,
        "logcache: the peer-comparison workloads on {n} keys of 16 B with {value_size}-byte values"
    )?;
    let r = logcache_workload::run::<logcache_workload::Logcache>(
        &dir.path().join("store"),
        n,
        value_size,
    );
    for m in logcache_workload::METRICS {
        let x = (m.value)(&r);
        let value = match m.unit {
            Unit::Ops => format!("{x:.0}"),
            Unit::Millis | Unit::Megabytes => format!("{x:.1}"),
            Unit::Seconds => format!("{x:.2}"),
        };
        writeln!(out, "{:<60} {value}", m.label)?;
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::NotFound(message)) => {
            eprintln!("logcache: {message}");
            ExitCode::from(1)
        }
        Err(Failure::Fatal(message)) => {
            eprintln!("logcache: {message}");
            ExitCode::from(2)
        }
    }
}
