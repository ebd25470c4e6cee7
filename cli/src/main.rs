//! `logcache`: inspect and maintain a logcache store directory.
//!
//! It understands the typed cache (`logcache::Cache`): keys are shown as their namespace and
//! the key as JSON, `get` finds a key as `cache.get` does and prints the value as JSON. Keys
//! that are not the typed cache's (written by the engine directly, or by `logcache set`) are
//! shown and read as raw bytes.
//!
//! Exit codes: 0 success; 1 a key was not found, or `verify` found a problem; 2 the store
//! could not be used (missing, locked, corrupt, I/O error) or the arguments were wrong.

use std::collections::BTreeMap;
use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use logcache::inspect;
use logcache_engine::{Durability, Error, Options, Store};
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
    /// Keys, bytes live and dead, segments, typed-cache namespaces, what opening repaired.
    Stats { dir: PathBuf },
    /// Print the value under KEY: a typed-cache value as JSON, a raw value as its bytes. Exit
    /// 1 if absent.
    Get {
        dir: PathBuf,
        #[command(flatten)]
        key: KeyArg,
    },
    /// Store VALUE under the raw key KEY; `@path` reads the value from a file, `@-` from
    /// stdin. (Typed values are written by programs, which know their types.)
    Set {
        dir: PathBuf,
        key: String,
        value: String,
        /// Expire after this many seconds.
        #[arg(long)]
        ttl: Option<u64>,
    },
    /// Delete KEY (typed or raw, as `get` finds it); exit 1 if it was absent.
    Del {
        dir: PathBuf,
        #[command(flatten)]
        key: KeyArg,
    },
    /// List the live keys, one a line: typed-cache keys as `NAMESPACE KEY-AS-JSON`, others as
    /// their bytes (non-UTF-8 bytes escaped).
    Keys {
        dir: PathBuf,
        /// Only keys whose line starts with this.
        #[arg(long)]
        prefix: Option<String>,
        /// Also keys that `clear()` left behind (marked `(cleared)`).
        #[arg(long)]
        all: bool,
    },
    /// Rewrite the segments without their dead records.
    Compact { dir: PathBuf },
    /// Check every record's checksum and every hint file; exit 1 if anything is wrong.
    Verify { dir: PathBuf },
    /// Rewrite a damaged store without its damaged records and say what was dropped; no
    /// other process may have it open.
    Repair { dir: PathBuf },
    /// Write every live entry to stdout as JSON lines (key and value in base64).
    Export { dir: PathBuf },
    /// Read JSON lines (as written by `export`) from stdin into the store.
    Import { dir: PathBuf },
    /// Run the logcache part of the peer comparison (docs/benchmarks.md) on a temporary
    /// store: load, reads, a 2-thread mix, durable writes, overwrites and compaction, open.
    #[cfg(feature = "bench")]
    Bench {
        /// How many keys.
        #[arg(long, default_value_t = 200_000)]
        keys: usize,
        /// Value size in bytes.
        #[arg(long, default_value_t = 100)]
        value_size: usize,
    },
}

/// A key as the command line names it.
#[derive(Args)]
struct KeyArg {
    /// The key: a string, as in `cache.get("user:1")`; with `--json`, any key as JSON.
    key: String,
    /// The key's namespace (a memoized function's is its path, as `keys` shows).
    #[arg(long, default_value = logcache::DEFAULT_NAMESPACE)]
    namespace: String,
    /// KEY is JSON: `'["square",12]'` for `cache.get(&("square", 12))`.
    #[arg(long)]
    json: bool,
    /// KEY is a raw key of the store, not a typed-cache key.
    #[arg(long, conflicts_with = "json")]
    raw: bool,
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
            Error::Locked(dir) => format!(
                "{} is open exclusively by another store (locked)",
                dir.display()
            ),
            other => other.to_string(),
        })
    }
}

impl From<logcache::Error> for Failure {
    fn from(e: logcache::Error) -> Self {
        match e {
            logcache::Error::Engine(e) => e.into(),
            other => Failure::Fatal(other.to_string()),
        }
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

/// A missing directory is an error for every command but `set` and `import`, which create it.
fn must_exist(dir: &Path) -> Result<(), Failure> {
    if dir.exists() {
        return Ok(());
    }
    Err(Failure::Fatal(format!("{} does not exist", dir.display())))
}

/// Opens an existing store; unlike `Store::open`, a missing directory is an error.
fn open(dir: &Path) -> Result<Store, Failure> {
    must_exist(dir)?;
    Ok(Store::open(dir, options())?)
}

/// Opens an existing store for a command that only reads, changing nothing in it: read-only
/// when its index was closed cleanly; else alongside the processes that have it open, or
/// after a process died (same boot: nothing is cut). An index that must be rebuilt (after an
/// OS crash, or missing) is an error: a rebuild writes, and may cut a torn tail.
fn open_for_reading(dir: &Path) -> Result<Store, Failure> {
    must_exist(dir)?;
    match Store::open(dir, options().read_only(true)) {
        Err(logcache_engine::Error::BadIndex { .. }) => {}
        other => return Ok(other?),
    }
    match Store::open(dir, options().rebuild_index(false)) {
        Err(logcache_engine::Error::BadIndex { reason, .. }) => Err(Failure::Fatal(format!(
            "{}: its index must be rebuilt from the segments ({reason}), which writes to the \
             store, and this command only reads: run `logcache repair {}` (or open the store \
             from the application) first",
            dir.display(),
            dir.display()
        ))),
        other => Ok(other?),
    }
}

fn open_or_create(dir: &Path) -> Result<Store, Failure> {
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

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The typed cache's view of a store: its namespace and tag counters.
struct Typed {
    counters: BTreeMap<String, u64>,
}

impl Typed {
    fn of(store: &Store) -> Result<Typed, Failure> {
        Ok(Typed {
            counters: inspect::disk_counters(store)?,
        })
    }

    fn generation(&self, namespace: &str) -> u64 {
        self.counters
            .get(&inspect::namespace_counter(namespace))
            .copied()
            .unwrap_or(0)
    }

    /// Whether stored bytes are a live typed value: not expired, no evicted tag.
    fn is_live(&self, value: &inspect::StoredValue<'_>) -> bool {
        (value.expires_at == 0 || value.expires_at > now_ms())
            && value.tags.iter().all(|(tag, generation)| {
                self.counters
                    .get(&format!("tag:{tag}"))
                    .copied()
                    .unwrap_or(0)
                    == *generation
            })
    }

    /// The storage key KEY names.
    fn key(&self, arg: &KeyArg) -> Result<Vec<u8>, Failure> {
        let generation = self.generation(&arg.namespace);
        let encoded = if arg.json {
            let key: serde_json::Value = serde_json::from_str(&arg.key)
                .map_err(|e| Failure::Fatal(format!("KEY is not JSON: {e}")))?;
            inspect::storage_key(&arg.namespace, generation, &key)
        } else {
            inspect::storage_key(&arg.namespace, generation, &arg.key)
        };
        encoded.map_err(|e| Failure::Fatal(format!("KEY cannot be encoded: {e}")))
    }
}

/// Where KEY lives in the store: a typed entry (with its value as JSON), or a raw key.
enum Found {
    Typed { key: Vec<u8>, json: String },
    Raw { key: Vec<u8>, value: Vec<u8> },
}

fn find(store: &Store, arg: &KeyArg) -> Result<Option<Found>, Failure> {
    if !arg.raw {
        let typed = Typed::of(store)?;
        let key = typed.key(arg)?;
        if let Some(bytes) = store.get(&key)? {
            let value = inspect::parse_value(&bytes)
                .map_err(|e| Failure::Fatal(format!("the stored value is damaged: {e}")))?;
            if !typed.is_live(&value) {
                return Ok(None);
            }
            let json = inspect::to_json(value.value)
                .map_err(|e| Failure::Fatal(format!("the stored value is damaged: {e}")))?;
            return Ok(Some(Found::Typed { key, json }));
        }
        if arg.json || arg.namespace != logcache::DEFAULT_NAMESPACE {
            return Ok(None);
        }
    }
    let key = arg.key.as_bytes().to_vec();
    Ok(store.get(&key)?.map(|value| Found::Raw { key, value }))
}

fn stats(out: &mut impl Write, dir: &Path) -> Result<(), Failure> {
    let store = open_for_reading(dir)?;
    let s = store.stats();
    let r = store.recovery_report();
    writeln!(out, "keys          {}", s.keys)?;
    writeln!(out, "segments      {}", s.segments)?;
    writeln!(out, "disk bytes    {}", s.disk_bytes)?;
    writeln!(out, "live bytes    {}", s.live_bytes)?;
    writeln!(out, "dead bytes    {}", s.dead_bytes)?;
    writeln!(out, "hints used    {} of {}", r.hints_used, r.segments)?;
    if let Some(t) = &r.torn_tail {
        writeln!(
            out,
            "torn tail     {} bytes cut from segment {:016x}.data at {} ({})",
            t.bytes, t.segment, t.offset, t.reason
        )?;
    }
    for d in &r.damaged {
        writeln!(
            out,
            "damaged       {} bytes skipped in segment {:016x}.data at {} ({}): run `logcache repair`",
            d.len, d.segment, d.offset, d.reason
        )?;
    }
    let typed = Typed::of(&store)?;
    let mut namespaces: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for key in store.keys() {
        if let Some(k) = inspect::parse_key(&key) {
            let current = k.generation == typed.generation(&k.namespace);
            let counts = namespaces.entry(k.namespace).or_default();
            if current {
                counts.0 += 1;
            } else {
                counts.1 += 1;
            }
        }
    }
    for (namespace, (live, cleared)) in namespaces {
        let cleared = if cleared > 0 {
            format!(" (and {cleared} left by clear(), for vacuum())")
        } else {
            String::new()
        };
        writeln!(out, "namespace     {namespace}: {live} keys{cleared}")?;
    }
    Ok(())
}

fn get(out: &mut impl Write, dir: &Path, key: &KeyArg) -> Result<(), Failure> {
    let store = open_for_reading(dir)?;
    match find(&store, key)? {
        Some(Found::Typed { json, .. }) => writeln!(out, "{json}")?,
        Some(Found::Raw { value, .. }) => out.write_all(&value)?,
        None if store.stats().damaged_reads > 0 => {
            return Err(Failure::NotFound(format!(
                "{}: not found (a record it may have had is damaged: run `logcache verify`)",
                key.key
            )));
        }
        None => return Err(Failure::NotFound(format!("{}: not found", key.key))),
    }
    Ok(())
}

fn set(dir: &Path, key: &str, value: &str, ttl: Option<u64>) -> Result<(), Failure> {
    let value = read_value(value)?;
    let store = open_or_create(dir)?;
    match ttl {
        Some(secs) => store.put_with_ttl(key.as_bytes(), &value, Duration::from_secs(secs))?,
        None => store.put(key.as_bytes(), &value)?,
    }
    Ok(store.close()?)
}

fn del(dir: &Path, key: &KeyArg) -> Result<(), Failure> {
    let store = open(dir)?;
    let stored_key = match find(&store, key)? {
        Some(Found::Typed { key, .. } | Found::Raw { key, .. }) => key,
        None => return Err(Failure::NotFound(format!("{}: not found", key.key))),
    };
    store.delete(&stored_key)?;
    Ok(store.close()?)
}

fn keys(out: &mut impl Write, dir: &Path, prefix: Option<&str>, all: bool) -> Result<(), Failure> {
    let store = open_for_reading(dir)?;
    let typed = Typed::of(&store)?;
    let mut lines = Vec::new();
    for key in store.keys() {
        let line = match inspect::parse_key(&key) {
            Some(k) => {
                let current = k.generation == typed.generation(&k.namespace);
                if !current && !all {
                    continue;
                }
                let json = inspect::to_json(k.key).unwrap_or_else(|_| printable(k.key));
                let mark = if current { "" } else { " (cleared)" };
                format!("{} {json}{mark}", k.namespace)
            }
            None => printable(&key),
        };
        if prefix.is_none_or(|p| line.starts_with(p)) {
            lines.push(line);
        }
    }
    lines.sort();
    for line in lines {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

fn compact(out: &mut impl Write, dir: &Path) -> Result<(), Failure> {
    let store = open(dir)?;
    let bar = if io::stderr().is_terminal() {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {eta}")
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
    Ok(())
}

fn verify(out: &mut impl Write, dir: &Path) -> Result<(), Failure> {
    must_exist(dir)?;
    // Alone, verify offline (no recovery runs, nothing changes). If a process has the store
    // open, join it: the open store holds compaction and writes while its files are checked.
    let report = match logcache_engine::verify(dir) {
        Err(logcache_engine::Error::Locked(_)) => Store::open(dir, options())?.verify()?,
        other => other?,
    };
    writeln!(
        out,
        "{} segments, {} records, {} hint files checked",
        report.segments, report.records, report.hints
    )?;
    for p in &report.problems {
        let skipped = if p.len > 0 {
            format!(", {} bytes without a valid record", p.len)
        } else {
            String::new()
        };
        let note = if p.torn_tail {
            " (may be a write a crash cut short: a rebuild after a crash cuts it off)"
        } else if p.len > 0 {
            " (damage: the store skips it, and the entries there are lost)"
        } else {
            ""
        };
        writeln!(
            out,
            "{:016x}.data offset {}: {}{skipped}{note}",
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
    Ok(())
}

fn repair(out: &mut impl Write, dir: &Path) -> Result<(), Failure> {
    must_exist(dir)?;
    let report = logcache_engine::repair(dir, options())?;
    for d in &report.damaged {
        writeln!(
            out,
            "dropped {:016x}.data offset {}: {} bytes without a valid record ({})",
            d.segment, d.offset, d.len, d.reason
        )?;
    }
    if let Some(t) = &report.torn_tail {
        writeln!(
            out,
            "cut {:016x}.data at {}: {} bytes of a write a crash cut short ({})",
            t.segment, t.offset, t.bytes, t.reason
        )?;
    }
    let before = report
        .keys_before
        .map_or_else(|| "unknown".to_string(), |n| n.to_string());
    writeln!(
        out,
        "keys: {before} before, {} after; {} segments rewritten, {} bytes reclaimed",
        report.keys_after, report.compaction.segments_in, report.compaction.bytes_reclaimed
    )?;
    if !report.after.is_clean() {
        for p in &report.after.problems {
            writeln!(
                out,
                "still wrong: {:016x}.data offset {}: {}",
                p.segment, p.offset, p.reason
            )?;
        }
        return Err(Failure::Fatal(
            "the store could not be fully repaired".into(),
        ));
    }
    writeln!(out, "ok")?;
    Ok(())
}

fn export(out: &mut impl Write, dir: &Path) -> Result<(), Failure> {
    let store = open_for_reading(dir)?;
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
    Ok(())
}

fn import(out: &mut impl Write, dir: &Path) -> Result<(), Failure> {
    let store = open_or_create(dir)?;
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
    Ok(())
}

/// The logcache part of the peer comparison (docs/benchmarks.md), on a temporary store.
#[cfg(feature = "bench")]
fn bench(out: &mut impl Write, n: usize, value_size: usize) -> Result<(), Failure> {
    use logcache_workload::Unit;
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
    // The multi-process workload needs the peer harness, which runs processes of its own.
    for m in logcache_workload::METRICS.iter().filter(|m| !m.processes) {
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

fn run(cli: Cli) -> Result<(), Failure> {
    let mut out = io::stdout().lock();
    match cli.command {
        Command::Stats { dir } => stats(&mut out, &dir),
        Command::Get { dir, key } => get(&mut out, &dir, &key),
        Command::Set {
            dir,
            key,
            value,
            ttl,
        } => set(&dir, &key, &value, ttl),
        Command::Del { dir, key } => del(&dir, &key),
        Command::Keys { dir, prefix, all } => keys(&mut out, &dir, prefix.as_deref(), all),
        Command::Compact { dir } => compact(&mut out, &dir),
        Command::Verify { dir } => verify(&mut out, &dir),
        Command::Repair { dir } => repair(&mut out, &dir),
        Command::Export { dir } => export(&mut out, &dir),
        Command::Import { dir } => import(&mut out, &dir),
        #[cfg(feature = "bench")]
        Command::Bench { keys, value_size } => bench(&mut out, keys, value_size),
    }
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
