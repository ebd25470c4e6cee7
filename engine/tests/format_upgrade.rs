//! A store written by an older format version opens with this one and holds what it held.

mod common;

use std::path::Path;

use common::{contents, copy_dir, manual};
use logcache_engine::Store;

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The contents listed in `tests/fixtures/engine-v1.expected`: key, value, expiry.
fn expected() -> Vec<(Vec<u8>, Vec<u8>, u64)> {
    let listing = include_str!("fixtures/engine-v1.expected");
    listing
        .lines()
        .map(|line| {
            let mut fields = line.split(' ');
            let key = unhex(fields.next().unwrap());
            let value = unhex(fields.next().unwrap());
            let expires_at = fields.next().unwrap().parse().unwrap();
            (key, value, expires_at)
        })
        .collect()
}

fn fixture(into: &Path) {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/engine-v1");
    copy_dir(&from, into);
}

#[test]
fn a_version_1_store_opens_with_its_contents_and_takes_new_writes() {
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path());
    let expected = expected();
    assert_eq!(expected.len(), 79);
    let store = Store::open(dir.path(), manual()).unwrap();
    let found = contents(&store);
    assert_eq!(found.len(), expected.len());
    for (key, value, expires_at) in &expected {
        assert_eq!(
            store.get_with_expiry(key).unwrap(),
            Some((value.clone(), *expires_at)),
            "key {key:?}"
        );
    }
    assert_eq!(store.get(b"expired").unwrap(), None);
    assert_eq!(store.get(b"key002").unwrap(), None, "deleted in a batch");
    store.put(b"new", b"after the upgrade").unwrap();
    store.delete(b"key003").unwrap();
    store.close().unwrap();

    let store = Store::open(dir.path(), manual()).unwrap();
    assert_eq!(
        store.get(b"new").unwrap(),
        Some(b"after the upgrade".to_vec())
    );
    assert_eq!(store.get(b"key003").unwrap(), None);
    assert_eq!(contents(&store).len(), expected.len());
    store.compact().unwrap();
    assert_eq!(store.get(b"batch-a").unwrap(), Some(b"A".to_vec()));
    assert_eq!(contents(&store).len(), expected.len());
    assert_eq!(store.verify().unwrap().problems, vec![]);
}
