//! The `logcache` binary, run as a user would.

use std::fs;
use std::path::Path;

use assert_cmd::Command;

fn logcache() -> Command {
    Command::cargo_bin("logcache").unwrap()
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = logcache().args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn set_get_keys_del_stats() {
    let dir = tempfile::tempdir().unwrap();
    let d = path(dir.path());
    assert_eq!(run(&["set", d, "user:1", "Ann"]).0, 0);
    assert_eq!(run(&["set", d, "user:2", "Bob"]).0, 0);
    assert_eq!(run(&["set", d, "other", "x"]).0, 0);
    let file = dir.path().join("value.bin");
    fs::write(&file, [0u8, 255, 10]).unwrap();
    assert_eq!(run(&["set", d, "bin", &format!("@{}", path(&file))]).0, 0);

    let (code, stdout, _) = run(&["get", d, "user:1"]);
    assert_eq!((code, stdout.as_str()), (0, "Ann"));
    let out = logcache().args(["get", d, "bin"]).output().unwrap();
    assert_eq!(
        out.stdout,
        vec![0u8, 255, 10],
        "values are written as raw bytes"
    );

    let (code, stdout, _) = run(&["keys", d, "--prefix", "user:"]);
    assert_eq!((code, stdout.as_str()), (0, "user:1\nuser:2\n"));

    assert_eq!(run(&["del", d, "user:1"]).0, 0);
    let (code, _, stderr) = run(&["get", d, "user:1"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("not found"), "{stderr}");
    assert_eq!(run(&["del", d, "user:1"]).0, 1);

    let (code, stdout, _) = run(&["stats", d]);
    assert_eq!(code, 0);
    assert!(stdout.contains("keys          3"), "{stdout}");
}

#[test]
fn a_missing_or_exclusively_locked_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    for cmd in ["stats", "keys", "compact", "verify", "export"] {
        let (code, _, stderr) = run(&[cmd, path(&missing)]);
        assert_eq!(code, 2, "{cmd}");
        assert!(stderr.contains("does not exist"), "{cmd}: {stderr}");
    }
    // A store open in another process is shared: the CLI reads it while it runs.
    let store =
        logcache_engine::Store::open(dir.path(), logcache_engine::Options::default()).unwrap();
    store.put(b"k", b"v").unwrap();
    let (code, stdout, _) = run(&["get", path(dir.path()), "k"]);
    assert_eq!((code, stdout.as_str()), (0, "v"));
    for cmd in ["stats", "keys", "verify", "export"] {
        let (code, stdout, stderr) = run(&[cmd, path(dir.path())]);
        assert_eq!(code, 0, "{cmd}: {stdout} {stderr}");
    }
    drop(store);
    // One opened exclusively keeps it out.
    let store = logcache_engine::Store::open(
        dir.path(),
        logcache_engine::Options::default().exclusive(true),
    )
    .unwrap();
    let (code, _, stderr) = run(&["get", path(dir.path()), "k"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("locked"), "{stderr}");
    drop(store);
}

#[test]
fn verify_reports_corruption_with_segment_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let d = path(dir.path());
    for i in 0..20 {
        assert_eq!(run(&["set", d, &format!("k{i}"), "some value"]).0, 0);
    }
    let (code, stdout, _) = run(&["verify", d]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.ends_with("ok\n"), "{stdout}");

    // Damage the first record of a sealed segment (after 24 bytes of header and padding):
    // a store with small segments, written without the background thread (so no hints).
    let sealed = tempfile::tempdir().unwrap();
    {
        let opts = logcache_engine::Options::default()
            .max_segment_size(1024)
            .auto_compaction(false);
        let store = logcache_engine::Store::open(sealed.path(), opts).unwrap();
        for i in 0..40 {
            store
                .put(format!("k{i}").as_bytes(), b"some value")
                .unwrap();
        }
    }
    let d = path(sealed.path());
    let mut segments: Vec<_> = fs::read_dir(sealed.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "data"))
        .collect();
    segments.sort();
    assert!(segments.len() > 1, "{segments:?}");
    let mut bytes = fs::read(&segments[0]).unwrap();
    bytes[24 + 30] ^= 0xff;
    fs::write(&segments[0], &bytes).unwrap();
    let name = segments[0]
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let (code, stdout, _) = run(&["verify", d]);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains(&format!("{name}.data offset 24: checksum mismatch")),
        "{stdout}"
    );
    // The store was closed cleanly, so its index is used as it is: the read that reaches the
    // damaged record finds its entry lost, and says so; the others read.
    let (code, _, stderr) = run(&["get", d, "--raw", "k0"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("damaged"), "{stderr}");
    let (code, stdout, _) = run(&["get", d, "--raw", "k1"]);
    assert_eq!((code, stdout.as_str()), (0, "some value"));
}

#[test]
fn export_then_import_copies_a_store() {
    let from = tempfile::tempdir().unwrap();
    let to = tempfile::tempdir().unwrap();
    for (k, v) in [("a", "1"), ("b", "two"), ("ключ", "значение")] {
        assert_eq!(run(&["set", path(from.path()), k, v]).0, 0);
    }
    let exported = logcache()
        .args(["export", path(from.path())])
        .output()
        .unwrap();
    assert!(exported.status.success());
    assert_eq!(String::from_utf8_lossy(&exported.stdout).lines().count(), 3);
    logcache()
        .args(["import", path(to.path())])
        .write_stdin(exported.stdout.clone())
        .assert()
        .success()
        .stdout("imported 3 entries\n");
    let (_, v, _) = run(&["get", path(to.path()), "ключ"]);
    assert_eq!(v, "значение");
    logcache()
        .args(["import", path(to.path())])
        .write_stdin("{not json\n")
        .assert()
        .code(2);
}

#[test]
fn export_and_import_keep_expiry_times() {
    let from = tempfile::tempdir().unwrap();
    let to = tempfile::tempdir().unwrap();
    assert_eq!(
        run(&["set", path(from.path()), "k", "v", "--ttl", "3600"]).0,
        0
    );
    assert_eq!(run(&["set", path(from.path()), "forever", "v"]).0, 0);
    let (code, exported, _) = run(&["export", path(from.path())]);
    assert_eq!(code, 0);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let lines: Vec<serde_json::Value> = exported
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let forever = &lines[0];
    assert!(forever.get("expires_at").is_none(), "{forever}");
    let expires_at = lines[1]["expires_at"].as_u64().expect("an expiry time");
    assert!(
        (now_ms + 3_500_000..=now_ms + 3_600_000).contains(&expires_at),
        "{expires_at} vs now {now_ms}"
    );
    logcache()
        .args(["import", path(to.path())])
        .write_stdin(exported.clone())
        .assert()
        .success();
    let (_, again, _) = run(&["export", path(to.path())]);
    assert_eq!(again, exported, "the copy carries the same expiry times");
}

#[test]
fn compact_reclaims_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let d = path(dir.path());
    for i in 0..10 {
        assert_eq!(run(&["set", d, "same", &format!("value {i}")]).0, 0);
    }
    let (code, stdout, _) = run(&["compact", d]);
    assert_eq!(code, 0);
    // Every `set` appended to the same segment: compacting seals it and keeps the last value.
    assert!(
        stdout.starts_with("compacted 1 segments into 1"),
        "{stdout}"
    );
    assert!(stdout.contains("1 records kept, 9 dropped"), "{stdout}");
    let (_, stats, _) = run(&["stats", d]);
    assert!(
        stats.contains("segments      1") && stats.contains("dead bytes    0"),
        "{stats}"
    );
    let (_, v, _) = run(&["get", d, "same"]);
    assert_eq!(v, "value 9");
}

#[cfg(feature = "bench")]
#[test]
fn bench_runs_the_peer_workloads_on_a_temporary_store() {
    let (code, stdout, stderr) = run(&["bench", "--keys", "2000", "--value-size", "64"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("logcache: the peer-comparison workloads on 2000 keys"));
    let rates: Vec<f64> = stdout
        .lines()
        .filter(|l| l.contains(" (ops/s) ") || l.contains(" (writes/s) "))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(rates.len(), 7, "{stdout}");
    assert!(rates.iter().all(|&r| r > 0.0), "{stdout}");
    for label in [
        "disk at the end",
        "open the closed store",
        "peak heap (anonymous) memory",
    ] {
        assert!(stdout.contains(label), "{label} missing: {stdout}");
    }
}

/// What a program stored with the typed cache, as the command line shows and finds it.
#[test]
fn typed_caches_are_shown_and_found_as_the_program_named_them() {
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
    struct UserDetail {
        name: String,
        age: u8,
    }

    let dir = tempfile::tempdir().unwrap();
    let d = path(dir.path());
    {
        let cache = logcache::Cache::open(dir.path()).unwrap();
        cache
            .set(
                "opt",
                &UserDetail {
                    name: "Jason".into(),
                    age: 25,
                },
            )
            .unwrap();
        cache.set(&("square", 12), &144u32).unwrap();
        cache
            .namespace("sessions")
            .set("s1", &vec!["a".to_string(), "b".into()])
            .unwrap();
        cache.namespace("old").set("gone", &1u8).unwrap();
        cache.namespace("old").clear().unwrap();
        let spec = logcache::memo::MemoSpec::new("app::extract");
        let _: String = logcache::memo::memoize(&cache, &spec, &("Jason is 25",), || "J".into());
        cache
            .set_with_ttl("expired", &1u8, std::time::Duration::from_millis(1))
            .unwrap();
        cache
            .set_with("tagged", &2u8, &logcache::SetOptions::new().tag("t"))
            .unwrap();
        cache.evict_tag("t").unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(5));

    let (code, stdout, stderr) = run(&["get", d, "opt"]);
    assert_eq!(
        (code, stdout.as_str()),
        (0, "{\"name\":\"Jason\",\"age\":25}\n"),
        "{stderr}"
    );
    let (code, stdout, _) = run(&["get", d, "--json", r#"["square",12]"#]);
    assert_eq!((code, stdout.as_str()), (0, "144\n"));
    let (code, stdout, _) = run(&["get", d, "--namespace", "sessions", "s1"]);
    assert_eq!((code, stdout.as_str()), (0, "[\"a\",\"b\"]\n"));
    for gone in [["get", d, "expired"], ["get", d, "tagged"]] {
        assert_eq!(run(&gone).0, 1, "{gone:?}: expired or evicted by its tag");
    }
    assert_eq!(
        run(&["get", d, "--namespace", "old", "gone"]).0,
        1,
        "cleared"
    );
    assert_eq!(run(&["get", d, "--raw", "opt"]).0, 1, "not a raw key");

    let (code, stdout, _) = run(&["keys", d]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines.contains(&r#"default "opt""#), "{stdout}");
    assert!(lines.contains(&r#"default ["square",12]"#), "{stdout}");
    assert!(lines.contains(&r#"sessions "s1""#), "{stdout}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("app::extract [0,0,") && l.ends_with(r#",0,["Jason is 25"]]"#)),
        "a memoized call: version, body hash, result type, instantiation, arguments: {stdout}"
    );
    assert!(
        !stdout.contains("gone"),
        "cleared keys are hidden: {stdout}"
    );
    let (_, all, _) = run(&["keys", d, "--all"]);
    assert!(all.contains(r#"old "gone" (cleared)"#), "{all}");
    let (_, sessions, _) = run(&["keys", d, "--prefix", "sessions"]);
    assert_eq!(sessions, "sessions \"s1\"\n");

    let (_, stats, _) = run(&["stats", d]);
    assert!(stats.contains("namespace     sessions: 1 keys"), "{stats}");
    assert!(
        stats.contains("namespace     old: 0 keys (and 1 left by clear()"),
        "{stats}"
    );

    assert_eq!(run(&["del", d, "opt"]).0, 0);
    assert_eq!(run(&["get", d, "opt"]).0, 1);
    let cache = logcache::Cache::open(dir.path()).unwrap();
    assert_eq!(
        cache.get::<UserDetail>("opt").unwrap(),
        None,
        "deleted for the program too"
    );
    assert_eq!(cache.get::<u32>(&("square", 12)).unwrap(), Some(144));
}

/// The reproduction of issue 13: a flipped byte in the middle of the only segment of 3,000
/// entries. Read-only commands change nothing and serve every other entry; `repair` drops
/// the damage and says so; after it, `verify` is clean.
#[test]
fn one_flipped_byte_costs_its_entries_and_repair_drops_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = path(dir.path());
    let b64 = |bytes: &[u8]| {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk.iter().fold(0u32, |acc, &b| acc << 8 | u32::from(b))
                << (8 * (3 - chunk.len()));
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    };
    let lines: String = (0..3000u32)
        .map(|i| {
            let key = format!("key-{i:05}");
            let value = vec![(i % 251) as u8; 200];
            format!(
                "{{\"key\":\"{}\",\"value\":\"{}\"}}\n",
                b64(key.as_bytes()),
                b64(&value)
            )
        })
        .collect();
    logcache()
        .args(["import", d])
        .write_stdin(lines)
        .assert()
        .success();
    let segment = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "data"))
        .unwrap();
    let mut bytes = fs::read(&segment).unwrap();
    bytes[348_000] ^= 0xff;
    fs::write(&segment, &bytes).unwrap();

    let (code, stdout, _) = run(&["verify", d]);
    assert_eq!(code, 1);
    assert!(stdout.contains("damage: the store skips it"), "{stdout}");
    let exported = logcache().args(["export", d]).output().unwrap();
    assert!(exported.status.success());
    assert_eq!(
        String::from_utf8_lossy(&exported.stdout).lines().count(),
        2999
    );
    assert_eq!(
        fs::read(&segment).unwrap(),
        bytes,
        "reading changed nothing"
    );

    let (code, stdout, stderr) = run(&["repair", d]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("dropped"), "{stdout}");
    assert!(stdout.contains("3000 before, 2998 after"), "{stdout}");
    let (code, stdout, _) = run(&["verify", d]);
    assert_eq!((code, stdout.lines().last()), (0, Some("ok")), "{stdout}");
    let got = logcache()
        .args(["get", d, "--raw", "key-02999"])
        .output()
        .unwrap();
    assert!(got.status.success());
    assert_eq!(got.stdout, vec![(2999 % 251) as u8; 200]);
}

/// Every file of `dir` and its bytes.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, fs::read(&p).unwrap())
        })
        .collect();
    files.sort();
    files
}

/// Commands that only read change no file: neither on a store closed cleanly, nor on one
/// whose index must be rebuilt (they refuse, and say how to rebuild it).
#[test]
fn commands_that_only_read_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = path(dir.path());
    for (k, v) in [("a", "1"), ("b", "2")] {
        assert_eq!(run(&["set", d, k, v]).0, 0);
    }
    let before = snapshot(dir.path());
    for args in [
        vec!["stats", d],
        vec!["get", d, "--raw", "a"],
        vec!["keys", d],
        vec!["export", d],
        vec!["verify", d],
    ] {
        let (code, stdout, stderr) = run(&args);
        assert_eq!(code, 0, "{args:?}: {stdout}{stderr}");
        assert_eq!(snapshot(dir.path()), before, "{args:?} changed a file");
    }

    // Without its index the store must be rebuilt from the segments, which writes.
    fs::remove_file(dir.path().join("INDEX")).unwrap();
    let before = snapshot(dir.path());
    for args in [
        vec!["stats", d],
        vec!["get", d, "--raw", "a"],
        vec!["keys", d],
        vec!["export", d],
    ] {
        let (code, _, stderr) = run(&args);
        assert_eq!(code, 2, "{args:?}");
        assert!(stderr.contains("logcache repair"), "{args:?}: {stderr}");
        assert_eq!(snapshot(dir.path()), before, "{args:?} changed a file");
    }
    assert_eq!(run(&["repair", d]).0, 0);
    let (code, value, _) = run(&["get", d, "--raw", "b"]);
    assert_eq!((code, value.as_str()), (0, "2"));
}
