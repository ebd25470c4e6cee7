//! Tests with real processes: a child writing with `Durability::Sync` is killed with SIGKILL
//! at random moments, and after every kill each acknowledged write must be in the store; and
//! several processes share one store, and an exclusive store keeps the others out.
//!
//! This file has its own `main` (harness = false): the test binary re-invokes itself as the
//! child, chosen by the `LOGCACHE_CHILD_ROLE` environment variable.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use logcache_engine::{Durability, Error, Options, Store, WriteBatch};

const ROLE: &str = "LOGCACHE_CHILD_ROLE";
const DIR: &str = "LOGCACHE_CHILD_DIR";
const ROUND: &str = "LOGCACHE_CHILD_ROUND";
const WRITER_THREADS: u32 = 2;
const KILL_ROUNDS: u32 = 24;

fn main() {
    match std::env::var(ROLE).as_deref() {
        Ok("writer") => child_writer(),
        Ok("hold_lock") => child_hold_lock(),
        Ok("compact_writer") => child_compact_writer(),
        Ok("truncate_mapped") => child_truncate_mapped(),
        _ => run_tests(),
    }
}

fn run_tests() {
    common::run_tests(&[
        (
            "a_segment_truncated_under_an_open_store_kills_the_reader_with_sigbus",
            truncated_under_an_open_store,
        ),
        (
            "sigkill_during_sync_writes_loses_no_acknowledged_write",
            sigkill_during_sync_writes,
        ),
        (
            "sigkill_during_compaction_loses_nothing_and_resurrects_nothing",
            sigkill_during_compaction,
        ),
        (
            "a_store_open_in_another_process_is_shared_unless_exclusive",
            shared_across_processes,
        ),
        (
            "a_killed_holder_leaves_the_store_to_the_others",
            killed_holder_leaves_the_store,
        ),
    ]);
}

fn writer_options() -> Options {
    Options::default()
        .durability(Durability::Sync)
        .max_segment_size(4096)
}

fn key(round: u32, thread: u32, i: u64, part: &str) -> Vec<u8> {
    format!("{round}/{thread}/{i:08}{part}").into_bytes()
}

fn value(round: u32, thread: u32, i: u64) -> Vec<u8> {
    format!("<{round}:{thread}:{i}>")
        .repeat(1 + (i % 13) as usize)
        .into_bytes()
}

/// Every tenth write of a thread is a two-key batch; the others are single puts.
fn is_batch(i: u64) -> bool {
    i % 10 == 9
}

/// Child: writes until killed, printing `THREAD I` after each acknowledged write.
fn child_writer() {
    let dir = std::env::var(DIR).unwrap();
    let round: u32 = std::env::var(ROUND).unwrap().parse().unwrap();
    let store = Arc::new(Store::open(&dir, writer_options()).unwrap());
    let threads: Vec<_> = (0..WRITER_THREADS)
        .map(|t| {
            let store = Arc::clone(&store);
            thread::spawn(move || {
                for i in 0..1_000_000u64 {
                    if is_batch(i) {
                        let mut batch = WriteBatch::new();
                        batch
                            .put(&key(round, t, i, "a"), &value(round, t, i))
                            .put(&key(round, t, i, "b"), &value(round, t, i));
                        store.write_batch(&batch).unwrap();
                    } else {
                        store
                            .put(&key(round, t, i, ""), &value(round, t, i))
                            .unwrap();
                    }
                    let mut out = std::io::stdout().lock();
                    if writeln!(out, "{t} {i}").and_then(|()| out.flush()).is_err() {
                        return;
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// Options of the compacting child: small segments so compactions are many and short.
fn compact_options() -> Options {
    Options::default()
        .auto_compaction(false)
        .durability(Durability::Sync)
        .max_segment_size(4096)
}

/// Operation `i` of the compaction crash test: a put, or every eleventh a delete, over 64 keys.
fn compaction_op(i: u64) -> (Vec<u8>, Option<Vec<u8>>) {
    let key = format!("key{:02}", i % 64).into_bytes();
    let value = (i % 11 != 5).then(|| format!("op{i}-").repeat(1 + (i % 7) as usize).into_bytes());
    (key, value)
}

/// The store's expected contents after operations `0..n`.
fn compaction_model(n: u64) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut model = BTreeMap::new();
    for i in 0..n {
        match compaction_op(i) {
            (k, Some(v)) => model.insert(k, v),
            (k, None) => model.remove(&k),
        };
    }
    model
}

/// Child: compacts in a loop on one thread while another applies operations from
/// `LOGCACHE_CHILD_ROUND` on, printing `I` after each acknowledged one.
fn child_compact_writer() {
    let dir = std::env::var(DIR).unwrap();
    let start: u64 = std::env::var(ROUND).unwrap().parse().unwrap();
    let store = Arc::new(Store::open(&dir, compact_options()).unwrap());
    let compactor = {
        let store = Arc::clone(&store);
        thread::spawn(move || {
            loop {
                store.compact().unwrap();
            }
        })
    };
    for i in start.. {
        match compaction_op(i) {
            (k, Some(v)) => store.put(&k, &v).unwrap(),
            (k, None) => {
                store.delete(&k).unwrap();
            }
        }
        let mut out = std::io::stdout().lock();
        if writeln!(out, "{i}").and_then(|()| out.flush()).is_err() {
            break;
        }
    }
    drop(compactor);
}

fn sigkill_during_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = common::Rng::from_clock("sigkill_during_compaction");
    let mut done = 0u64;
    let mut compactions_cut = 0;
    for _ in 0..KILL_ROUNDS {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env(ROLE, "compact_writer")
            .env(DIR, dir.path())
            .env(ROUND, done.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(|l| l.ok())
                .map(|l| l.parse::<u64>().unwrap())
                .last()
        });
        thread::sleep(Duration::from_millis(rng.range(20, 200)));
        child.kill().unwrap();
        child.wait().unwrap();
        let acked = reader.join().unwrap().map_or(done, |last| last + 1);
        let store = Store::open(dir.path(), compact_options()).unwrap();
        compactions_cut += store.recovery_report().temp_files_removed;
        let found = common::contents(&store);
        // Every acknowledged operation is in; the one in flight at the kill may be too.
        let n = if found == compaction_model(acked) {
            acked
        } else {
            assert_eq!(
                found,
                compaction_model(acked + 1),
                "after {acked} acknowledged operations"
            );
            acked + 1
        };
        drop(store);
        done = n;
    }
    eprintln!(
        "{KILL_ROUNDS} kills during compaction, {done} operations checked, {compactions_cut} unfinished compaction files removed"
    );
    assert!(done > 0);
}

/// Child: fills a store, reopens it (so its segment is sealed and memory-mapped), cuts the
/// segment file behind the store's back, then reads a key whose record was cut off.
fn child_truncate_mapped() {
    let dir = std::env::var(DIR).unwrap();
    let opts = Options::default().auto_compaction(false);
    {
        let store = Store::open(&dir, opts.clone()).unwrap();
        for i in 0..1000u32 {
            store.put(&i.to_be_bytes(), &[7; 100]).unwrap();
        }
    }
    let store = Store::open(&dir, opts).unwrap();
    let segment = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "data"))
        .unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(100)
        .unwrap();
    println!("truncated");
    let read = store.get(&999u32.to_be_bytes());
    println!("survived: {read:?}");
}

/// Documents what happens when another program truncates a segment under an open store: the
/// mapped pages are gone, and reading them raises SIGBUS, which kills the process loudly
/// rather than returning a wrong value.
fn truncated_under_an_open_store() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .env(ROLE, "truncate_mapped")
        .env(DIR, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("truncated"), "{stdout}");
    assert!(!stdout.contains("survived"), "the read returned: {stdout}");
    const SIGBUS: i32 = 7;
    assert_eq!(out.status.signal(), Some(SIGBUS), "{:?}", out.status);
}

/// Child: opens the store, says so, and holds it until its stdin closes.
/// Opens the store, writes `held`, says `opened`; then for each line `KEY` on stdin prints
/// the value of `KEY` (or `-`), until stdin closes.
fn child_hold_lock() {
    let dir = std::env::var(DIR).unwrap();
    let store = Store::open(&dir, Options::default()).unwrap();
    store.put(b"held", b"by child").unwrap();
    println!("opened");
    for line in std::io::stdin().lock().lines() {
        let Ok(key) = line else { break };
        match store.get(key.as_bytes()).unwrap() {
            Some(v) => println!("{}", String::from_utf8(v).unwrap()),
            None => println!("-"),
        }
    }
    drop(store);
}

fn spawn_child(role: &str, dir: &Path, round: u32) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .env(ROLE, role)
        .env(DIR, dir)
        .env(ROUND, round.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Reads the child's acknowledgements until its stdout closes: the highest acknowledged
/// write of each thread.
fn collect_acks(stdout: ChildStdout) -> thread::JoinHandle<BTreeMap<u32, u64>> {
    thread::spawn(move || {
        let mut acked = BTreeMap::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let (t, i) = line.split_once(' ').unwrap();
            let (t, i): (u32, u64) = (t.parse().unwrap(), i.parse().unwrap());
            let prev = acked.insert(t, i);
            assert!(
                prev.is_none_or(|p| p + 1 == i),
                "acks of a thread come in order"
            );
        }
        acked
    })
}

/// Checks one round: per thread, the writes in the store are exactly writes `0..n` with
/// their exact values, and `n` covers every acknowledged write.
fn check_round(store: &Store, round: u32, acked: &BTreeMap<u32, u64>) -> u64 {
    let mut present = 0;
    for t in 0..WRITER_THREADS {
        let mut i = 0u64;
        loop {
            let found = if is_batch(i) {
                let a = store.get(&key(round, t, i, "a")).unwrap();
                let b = store.get(&key(round, t, i, "b")).unwrap();
                assert_eq!(
                    a.is_some(),
                    b.is_some(),
                    "round {round} thread {t} batch {i} is torn"
                );
                a.inspect(|a| assert_eq!(Some(a), b.as_ref()))
            } else {
                store.get(&key(round, t, i, "")).unwrap()
            };
            match found {
                Some(v) => assert_eq!(v, value(round, t, i), "round {round} thread {t} write {i}"),
                None => break,
            }
            i += 1;
        }
        if let Some(&last) = acked.get(&t) {
            assert!(
                i > last,
                "round {round} thread {t}: acknowledged write {last} lost (store has 0..{i})"
            );
        }
        // Nothing after the first gap: the store holds a prefix of each thread's writes.
        let keys: BTreeSet<Vec<u8>> = store.keys().collect();
        for j in i..i + 50 {
            for part in ["", "a", "b"] {
                assert!(
                    !keys.contains(&key(round, t, j, part)),
                    "write {j} present after a gap at {i}"
                );
            }
        }
        present += i;
    }
    present
}

fn sigkill_during_sync_writes() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = common::Rng::from_clock("sigkill_during_sync_writes");
    let mut history: Vec<BTreeMap<u32, u64>> = Vec::new();
    let mut torn_tails = 0;
    for round in 0..KILL_ROUNDS {
        let mut child = spawn_child("writer", dir.path(), round);
        let acks = collect_acks(child.stdout.take().unwrap());
        thread::sleep(Duration::from_millis(rng.range(5, 120)));
        child.kill().unwrap();
        child.wait().unwrap();
        history.push(acks.join().unwrap());

        let store = Store::open(dir.path(), Options::default()).unwrap();
        torn_tails += usize::from(store.recovery_report().torn_tail.is_some());
        for (r, acked) in history.iter().enumerate() {
            check_round(&store, r as u32, acked);
        }
    }
    let acked: u64 = history.iter().flat_map(|h| h.values()).map(|i| i + 1).sum();
    eprintln!(
        "{KILL_ROUNDS} kills, {acked} acknowledged writes checked, {torn_tails} torn tails cut"
    );
    assert!(acked > 0, "the children wrote something");
}

fn wait_for_line(stdout: ChildStdout, expect: &str) {
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), expect);
}

fn shared_across_processes() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn_child("hold_lock", dir.path(), 0);
    let mut replies = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    replies.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "opened");
    let store = Store::open(dir.path(), Options::default()).unwrap();
    assert_eq!(store.get(b"held").unwrap(), Some(b"by child".to_vec()));
    let mut ask = child.stdin.take().unwrap();
    // A write acknowledged here is read by the next get over there: no reopen, no polling.
    for i in 0..200u32 {
        let (k, v) = (format!("parent{i}"), format!("value {i}"));
        store.put(k.as_bytes(), v.as_bytes()).unwrap();
        writeln!(ask, "{k}").unwrap();
        line.clear();
        replies.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), v);
    }
    store.delete(b"parent7").unwrap();
    writeln!(ask, "parent7").unwrap();
    line.clear();
    replies.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "-", "a delete is seen too");
    let started = Instant::now();
    let err = Store::open(dir.path(), Options::default().exclusive(true)).unwrap_err();
    assert!(matches!(err, Error::Locked(_)), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a locked open fails at once, it does not wait"
    );
    drop(ask);
    assert!(child.wait().unwrap().success());
    drop(store);
    let store = Store::open(dir.path(), Options::default().exclusive(true)).unwrap();
    assert_eq!(store.get(b"held").unwrap(), Some(b"by child".to_vec()));
    assert_eq!(
        store.get(b"parent199").unwrap(),
        Some(b"value 199".to_vec())
    );
    assert!(
        store.recovery_report().index_rebuilt.is_none(),
        "the last to close marked the index clean"
    );
}

fn killed_holder_leaves_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn_child("hold_lock", dir.path(), 0);
    wait_for_line(child.stdout.take().unwrap(), "opened");
    let store = Store::open(dir.path(), Options::default()).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(store.get(b"held").unwrap(), Some(b"by child".to_vec()));
    store.put(b"after", b"the kill").unwrap();
    drop(store);
    let store = Store::open(dir.path(), Options::default().exclusive(true)).unwrap();
    assert_eq!(store.get(b"held").unwrap(), Some(b"by child".to_vec()));
    assert_eq!(store.get(b"after").unwrap(), Some(b"the kill".to_vec()));
}
