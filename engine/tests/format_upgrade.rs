//! A store written by each format version (the fixtures under `tests/fixtures/`) opens with
//! this build and holds what it held.

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
    parse_listing(include_str!("fixtures/engine-v1.expected"))
}

/// Key, value and expiry of each line of a fixture's listing.
fn parse_listing(listing: &str) -> Vec<(Vec<u8>, Vec<u8>, u64)> {
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

/// Checks that `store` holds exactly a fixture's `expected` listing, and neither the expired
/// entry nor the key the fixture's batch deleted.
fn holds_listing(store: &Store, expected: &[(Vec<u8>, Vec<u8>, u64)]) {
    assert_eq!(contents(store).len(), expected.len());
    for (key, value, expires_at) in expected {
        assert_eq!(
            store.get_with_expiry(key).unwrap(),
            Some((value.clone(), *expires_at)),
            "key {key:?}"
        );
    }
    assert_eq!(store.get(b"expired").unwrap(), None);
    assert_eq!(store.get(b"key002").unwrap(), None, "deleted in a batch");
}

fn fixture(into: &Path) {
    copy_fixture("engine-v1", into);
}

fn copy_fixture(name: &str, into: &Path) {
    let from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    copy_dir(&from, into);
}

#[test]
fn a_version_1_store_opens_with_its_contents_and_takes_new_writes() {
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path());
    let expected = expected();
    assert_eq!(expected.len(), 79);
    let store = Store::open(dir.path(), manual()).unwrap();
    holds_listing(&store, &expected);
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

/// The version 2 fixture, closed cleanly: opened through its index (no scan), then again
/// after its index is removed (rebuilt from the segments and hints); both hold exactly the
/// listing, and the store takes writes.
#[test]
fn a_version_2_store_opens_through_its_index_and_by_a_rebuild() {
    let expected = parse_listing(include_str!("fixtures/engine-v2.expected"));
    assert_eq!(expected.len(), 79);
    let dir = tempfile::tempdir().unwrap();
    copy_fixture("engine-v2", dir.path());
    let store = Store::open(dir.path(), manual()).unwrap();
    assert_eq!(
        store.recovery_report().index_rebuilt,
        None,
        "its index is used"
    );
    holds_listing(&store, &expected);
    drop(store);

    let dir = tempfile::tempdir().unwrap();
    copy_fixture("engine-v2", dir.path());
    std::fs::remove_file(dir.path().join("INDEX")).unwrap();
    let store = Store::open(dir.path(), manual()).unwrap();
    assert!(store.recovery_report().index_rebuilt.is_some());
    assert!(store.recovery_report().hints_used > 0);
    holds_listing(&store, &expected);
    store.put(b"new", b"after").unwrap();
    store.compact().unwrap();
    assert_eq!(store.get(b"new").unwrap().as_deref(), Some(&b"after"[..]));
    assert_eq!(store.verify().unwrap().problems, vec![]);
}
