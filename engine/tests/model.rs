//! Property test: random sequences of operations, interleaved with compactions, reopens and
//! segment rotation, agree with a `BTreeMap` model at every step.

mod common;

use std::collections::BTreeMap;

use common::contents;
use logcache_engine::{Durability, Store, WriteBatch};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Put(u8, Vec<u8>),
    /// A put that has already expired: it must read as absent and hide older values.
    PutExpired(u8, Vec<u8>),
    Delete(u8),
    Get(u8),
    Batch(Vec<(u8, Option<Vec<u8>>)>),
    Flush,
    Sync,
    Compact,
    Reopen,
}

fn key(k: u8) -> Vec<u8> {
    format!("key{k}").into_bytes()
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..40),
        1 => prop::collection::vec(any::<u8>(), 100..400),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let k = 0u8..24;
    prop_oneof![
        10 => (k.clone(), value()).prop_map(|(k, v)| Op::Put(k, v)),
        1 => (k.clone(), value()).prop_map(|(k, v)| Op::PutExpired(k, v)),
        3 => k.clone().prop_map(Op::Delete),
        5 => k.clone().prop_map(Op::Get),
        2 => prop::collection::vec((k, prop::option::of(value())), 0..6).prop_map(Op::Batch),
        1 => Just(Op::Flush),
        1 => Just(Op::Sync),
        2 => Just(Op::Compact),
        1 => Just(Op::Reopen),
    ]
}

fn durability() -> impl Strategy<Value = Durability> {
    prop_oneof![
        Just(Durability::None),
        Just(Durability::Flush),
        Just(Durability::Sync)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn store_agrees_with_a_map(
        ops in prop::collection::vec(op(), 1..120),
        durability in durability(),
        segment_size in prop_oneof![Just(256u64), Just(2048), Just(1 << 20)],
    ) {
        let dir = tempfile::tempdir().unwrap();
        let opts = common::manual().durability(durability).max_segment_size(segment_size);
        let mut store = Store::open(dir.path(), opts.clone()).unwrap();
        let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Put(k, v) => {
                    store.put(&key(k), &v).unwrap();
                    model.insert(key(k), v);
                }
                Op::PutExpired(k, v) => {
                    store.put_expiring_at(&key(k), &v, 1).unwrap();
                    model.remove(&key(k));
                }
                Op::Delete(k) => {
                    let existed = store.delete(&key(k)).unwrap();
                    prop_assert_eq!(existed, model.remove(&key(k)).is_some());
                }
                Op::Get(k) => {
                    prop_assert_eq!(store.get(&key(k)).unwrap(), model.get(&key(k)).cloned());
                    prop_assert_eq!(store.contains(&key(k)).unwrap(), model.contains_key(&key(k)));
                }
                Op::Batch(entries) => {
                    let mut batch = WriteBatch::new();
                    for (k, v) in entries {
                        match v {
                            Some(v) => {
                                batch.put(&key(k), &v);
                                model.insert(key(k), v);
                            }
                            None => {
                                batch.delete(&key(k));
                                model.remove(&key(k));
                            }
                        }
                    }
                    store.write_batch(&batch).unwrap();
                }
                Op::Flush => store.flush().unwrap(),
                Op::Sync => store.sync().unwrap(),
                Op::Compact => {
                    store.compact().unwrap();
                    prop_assert_eq!(store.stats().dead_bytes, 0);
                }
                Op::Reopen => {
                    drop(store);
                    store = Store::open(dir.path(), opts.clone()).unwrap();
                    prop_assert_eq!(store.recovery_report().torn_tail, None);
                }
            }
            prop_assert_eq!(store.len(), model.len());
        }
        prop_assert_eq!(&contents(&store), &model);
        let stats = store.stats();
        drop(store);
        let store = Store::open(dir.path(), opts).unwrap();
        prop_assert_eq!(&contents(&store), &model);
        prop_assert_eq!(store.stats().keys, stats.keys);
        prop_assert_eq!(store.stats().live_bytes, stats.live_bytes);
    }
}
