//! Crash states of a compaction, built from real files: an output cut at every byte while
//! still under its temporary name, a hint file cut at every byte, and the inputs deleted one
//! by one. Every state must open to exactly the contents the store had.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use common::{contents, copy_dir, manual};
use logcache_engine::{Options, Store};

fn options() -> Options {
    manual().max_segment_size(1024)
}

fn files(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "LOCK")
        .collect()
}

struct Compacted {
    before: tempfile::TempDir,
    after: tempfile::TempDir,
    model: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Data files the compaction deleted, ascending.
    inputs: Vec<String>,
    /// Data files it wrote.
    outputs: Vec<String>,
}

/// A store with overwrites, deletes and a key whose older value sits in a segment that the
/// compaction leaves alone, before and after a full compaction.
fn compacted() -> Compacted {
    let before = tempfile::tempdir().unwrap();
    let mut model = BTreeMap::new();
    {
        let store = Store::open(before.path(), options()).unwrap();
        for i in 0..400u32 {
            let key = format!("k{}", i % 37).into_bytes();
            if i % 9 == 4 {
                store.delete(&key).unwrap();
                model.remove(&key);
            } else {
                let value = format!("v{i}").repeat(1 + (i % 4) as usize).into_bytes();
                store.put(&key, &value).unwrap();
                model.insert(key, value);
            }
        }
    }
    let after = tempfile::tempdir().unwrap();
    copy_dir(before.path(), after.path());
    let store = Store::open(after.path(), options()).unwrap();
    let stats = store.compact().unwrap();
    assert!(
        stats.segments_in > 2 && stats.segments_out >= 2,
        "{stats:?}"
    );
    drop(store);
    let (b, a) = (files(before.path()), files(after.path()));
    let data = |s: &BTreeSet<String>, other: &BTreeSet<String>| -> Vec<String> {
        s.difference(other)
            .filter(|n| n.ends_with(".data"))
            .cloned()
            .collect()
    };
    Compacted {
        inputs: data(&b, &a),
        outputs: data(&a, &b),
        before,
        after,
        model,
    }
}

fn assert_opens_to(dir: &Path, model: &BTreeMap<Vec<u8>, Vec<u8>>, what: &str) {
    let store = Store::open(dir, options()).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(&contents(&store), model, "{what}");
    drop(store);
    assert!(
        files(dir).iter().all(|n| !n.ends_with(".tmp")),
        "{what}: temporary files remain"
    );
}

fn cut(path: &PathBuf, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

#[test]
fn an_output_cut_at_any_byte_before_its_rename_changes_nothing() {
    let c = compacted();
    for output in &c.outputs {
        let bytes = fs::read(c.after.path().join(output)).unwrap();
        for len in 0..=bytes.len() as u64 {
            let dir = tempfile::tempdir().unwrap();
            copy_dir(c.before.path(), dir.path());
            let temp = dir.path().join(format!("{output}.tmp"));
            fs::write(&temp, &bytes).unwrap();
            cut(&temp, len);
            assert_opens_to(dir.path(), &c.model, &format!("{output} cut at {len}"));
        }
    }
}

#[test]
fn a_hint_cut_at_any_byte_falls_back_to_a_scan() {
    let c = compacted();
    let hint = c.outputs[0].replace(".data", ".hint");
    let bytes = fs::read(c.after.path().join(&hint)).unwrap();
    for len in 0..bytes.len() as u64 {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(c.after.path(), dir.path());
        cut(&dir.path().join(&hint), len);
        assert_opens_to(dir.path(), &c.model, &format!("{hint} cut at {len}"));
        // And as a temporary file beside a complete output.
        let dir = tempfile::tempdir().unwrap();
        copy_dir(c.after.path(), dir.path());
        let temp = dir.path().join(format!("{hint}.tmp"));
        fs::rename(dir.path().join(&hint), &temp).unwrap();
        cut(&temp, len);
        assert_opens_to(dir.path(), &c.model, &format!("{hint}.tmp cut at {len}"));
    }
}

#[test]
fn inputs_deleted_oldest_first_leave_the_same_contents_at_every_step() {
    let c = compacted();
    for deleted in 0..=c.inputs.len() {
        for with_hints in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            copy_dir(c.before.path(), dir.path());
            for output in &c.outputs {
                fs::copy(c.after.path().join(output), dir.path().join(output)).unwrap();
                let hint = output.replace(".data", ".hint");
                if with_hints {
                    fs::copy(c.after.path().join(&hint), dir.path().join(&hint)).unwrap();
                }
            }
            for input in &c.inputs[..deleted] {
                fs::remove_file(dir.path().join(input)).unwrap();
            }
            assert_opens_to(
                dir.path(),
                &c.model,
                &format!(
                    "{deleted} of {} inputs deleted, hints: {with_hints}",
                    c.inputs.len()
                ),
            );
        }
    }
}

/// The order matters: deleting the newest input first can expose an old value whose
/// tombstone was in it. This shows the data above exercises the rule.
#[test]
fn deleting_inputs_newest_first_would_resurrect_a_key() {
    let c = compacted();
    let mut resurrected = false;
    for deleted in 1..c.inputs.len() {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(c.before.path(), dir.path());
        for output in &c.outputs {
            fs::copy(c.after.path().join(output), dir.path().join(output)).unwrap();
        }
        for input in c.inputs.iter().rev().take(deleted) {
            fs::remove_file(dir.path().join(input)).unwrap();
        }
        let store = Store::open(dir.path(), options()).unwrap();
        resurrected |= contents(&store) != c.model;
    }
    assert!(resurrected);
}
