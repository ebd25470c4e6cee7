//! A typed cache written by an older version opens with this one: its values, namespaces and
//! cleared namespaces are as they were.

use std::path::Path;

use logcache::Cache;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct UserDetail {
    name: String,
    age: u8,
}

fn copy_fixture(into: &Path) {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cache-v1");
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), into.join(entry.file_name())).unwrap();
    }
}

#[test]
fn a_version_1_cache_keeps_its_values_and_cleared_namespaces() {
    let dir = tempfile::tempdir().unwrap();
    copy_fixture(dir.path());
    for round in 0..2 {
        let cache = Cache::open(dir.path()).unwrap();
        let ada = UserDetail {
            name: "Ada".into(),
            age: 36,
        };
        assert_eq!(
            cache.get::<UserDetail>("user:1").unwrap(),
            Some(ada),
            "round {round}"
        );
        let other = cache.namespace("other");
        assert_eq!(
            other.get::<String>(&7u32).unwrap(),
            None,
            "cleared before the upgrade"
        );
        if round == 0 {
            assert_eq!(other.get::<String>(&8u32).unwrap(), Some("new".to_string()));
            other.clear().unwrap();
        } else {
            assert_eq!(
                other.get::<String>(&8u32).unwrap(),
                None,
                "cleared after it"
            );
        }
    }
}
