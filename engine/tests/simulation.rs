//! The deterministic simulation (`logcache_engine::simulation`) on fixed seeds: random
//! workloads on a simulated disk, power cuts at random points, with and without injected
//! faults; after every cut the store must hold a prefix of the acknowledged writes that keeps
//! every durable one. A failing seed is printed and replays exactly.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use logcache_engine::simdisk::{SimDisk, SimFaults};
use logcache_engine::simulation::{self, SimReport};
use logcache_engine::{Durability, Options, Store};

/// Runs seeds from `first` for about `budget`; the totals.
fn run_for(first: u64, budget: Duration, faults: bool) -> (u64, SimReport) {
    let start = Instant::now();
    let mut total = SimReport::default();
    let mut seed = first;
    while start.elapsed() < budget {
        let r = simulation::run(seed, 3, faults);
        total.writes += r.writes;
        total.checked_cuts += r.checked_cuts;
        total.failed_ops += r.failed_ops;
        total.evictions += r.evictions;
        total.disk.power_cuts += r.disk.power_cuts;
        total.disk.faults += r.disk.faults;
        seed += 1;
    }
    (seed - first, total)
}

#[test]
fn power_cuts_keep_a_prefix_with_every_synced_write() {
    let (runs, total) = run_for(1, Duration::from_secs(3), false);
    eprintln!("{runs} runs: {total:?}");
    assert!(runs >= 10, "only {runs} runs");
    assert_eq!(total.checked_cuts, 3 * runs, "every cut was checked");
    assert_eq!(total.disk.power_cuts, 3 * runs, "each epoch ends in a cut");
    assert!(total.writes > runs, "the workloads wrote");
    assert!(total.evictions > 0, "size limits evicted keys");
}

#[test]
fn power_cuts_and_disk_faults_never_give_a_wrong_value() {
    let (runs, total) = run_for(1 << 32, Duration::from_secs(3), true);
    eprintln!("{runs} runs: {total:?}");
    assert!(runs >= 10, "only {runs} runs");
    assert!(total.disk.faults > 0, "faults were injected");
    assert!(
        total.failed_ops > 0,
        "some operations failed as the faults said"
    );
}

#[test]
fn a_seed_replays_exactly() {
    // Also within one process: nothing of a run (such as the hash seed of a new index,
    // random on a real disk) may depend on the process or on the runs before it.
    for seed in (0..60u64).chain([7, 1 << 40, 12345]) {
        let faults = seed % 2 == 1;
        assert_eq!(
            simulation::run(seed, 2, faults),
            simulation::run(seed, 2, faults),
            "seed {seed}"
        );
    }
}

#[test]
fn a_scripted_run_follows_its_script_and_replays_exactly() {
    // A script from a generator stands in for a fuzz input.
    let script = |len: usize, salt: u64| -> Vec<u8> {
        (0..len as u64)
            .map(|i| ((i + salt).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8)
            .collect()
    };
    let (mut cuts, mut writes) = (0, 0);
    for salt in 0..200 {
        let long = script(400, salt);
        let a = simulation::run_script(salt, 3, salt % 2 == 0, &long);
        assert_eq!(a, simulation::run_script(salt, 3, salt % 2 == 0, &long));
        // The workload stops where the script does: a prefix of it writes no more.
        let short = simulation::run_script(salt, 3, false, &long[..20]);
        let whole = simulation::run_script(salt, 3, false, &long);
        assert!(
            short.writes <= whole.writes,
            "salt {salt}: {short:?} {whole:?}"
        );
        cuts += a.checked_cuts;
        writes += a.writes;
    }
    assert!(cuts >= 200, "scripted runs cut the power: {cuts}");
    assert!(writes > 2_000, "scripted runs wrote: {writes}");
    // An empty script runs no workload, and cuts no power.
    let empty = simulation::run_script(1, 3, true, &[]);
    assert_eq!((empty.writes, empty.checked_cuts), (0, 0));
}

#[test]
#[ignore]
fn replay_one() {
    let seed = std::env::var("SEED").map_or(7, |s| s.parse().unwrap());
    simulation::run(seed, 2, std::env::var("FAULTS").is_ok());
}

/// Options for stores on `disk`: no background work, and segments of 256 bytes, so that a
/// few hundred writes fill more segments than the smallest index has rows.
fn small_segments_on(disk: &Arc<SimDisk>) -> Options {
    Options::default()
        .vfs(Arc::clone(disk) as Arc<dyn logcache_engine::vfs::Vfs>)
        .auto_compaction(false)
        .background(false)
        .max_segment_size(256)
}

/// The store directory on a simulated disk.
const SIM_DIR: &str = "/sim/store";

/// A simulated disk and two stores on one directory of it, whose segments hold
/// `segment_size` bytes (room for every write of a test), with their options.
fn two_stores_with_one_segment(segment_size: u64) -> (Arc<SimDisk>, Options, Store, Store) {
    let disk = SimDisk::new(1, SimFaults::default());
    let opts = small_segments_on(&disk).max_segment_size(segment_size);
    let dir = Path::new(SIM_DIR);
    let first = Store::open(dir, opts.clone()).unwrap();
    let second = Store::open(dir, opts.clone()).unwrap();
    (disk, opts, first, second)
}

/// How many syncs `disk` counted while `f` ran.
fn fsyncs(disk: &SimDisk, f: impl FnOnce()) -> u64 {
    let before = disk.stats().syncs;
    f();
    disk.stats().syncs - before
}

/// Writes 200 keys through `store` (opened with [`small_segments_on`]): more segments than
/// the smallest table has rows, so the index grows into a new table file.
fn grow_the_index(store: &Store) {
    for i in 0..200u32 {
        store.put(&i.to_le_bytes(), &[7; 100]).unwrap();
    }
}

/// A `sync()` makes durable what another store on the directory appended after growing the
/// index: it looks at the active segment in the current table, not in the table this store
/// mapped before the growth, where every write it knew of was synced (the simulation found a
/// sync that missed such a write).
#[test]
fn a_sync_covers_writes_another_store_made_after_growing_the_index() {
    // A cut keeps an unsynced sector or not with even odds: several disks.
    for seed in 0..16 {
        let disk = SimDisk::new(seed, SimFaults::default());
        let opts = small_segments_on(&disk);
        let dir = Path::new(SIM_DIR);
        let syncing = Store::open(dir, opts.clone()).unwrap();
        // Every write synced: in the table `syncing` mapped, the active segment is synced.
        let growing = Store::open(dir, opts.clone().durability(Durability::Sync)).unwrap();
        grow_the_index(&growing);
        let writing = Store::open(dir, opts.clone()).unwrap();
        writing.put(b"after the growth", b"kept").unwrap();
        syncing.sync().unwrap();
        for store in [syncing, growing, writing] {
            store.simulate_crash();
        }
        disk.power_cut();
        let store = Store::open(dir, opts).unwrap();
        assert_eq!(
            store.get(b"after the growth").unwrap().as_deref(),
            Some(&b"kept"[..]),
            "disk {seed}: the sync made the other store's write durable"
        );
        assert_eq!(store.len(), 201);
    }
}

/// `len`, `keys` and `stats` see what another store on the directory wrote after growing the
/// index (they read the table this store had mapped before).
#[test]
fn counts_and_listings_see_writes_made_after_another_store_grew_the_index() {
    let disk = SimDisk::new(1, SimFaults::default());
    let opts = small_segments_on(&disk);
    let dir = Path::new(SIM_DIR);
    let reading = Store::open(dir, opts.clone()).unwrap();
    assert_eq!(reading.len(), 0);
    let growing = Store::open(dir, opts).unwrap();
    grow_the_index(&growing);
    assert_eq!(reading.len(), 200);
    assert_eq!(reading.keys().count(), 200);
    assert_eq!(reading.stats().keys, 200);
    assert_eq!(reading.stats().segments, growing.stats().segments);
}

/// A sync records how far it made the active segment durable in the current table, also
/// when another store grew the index since this one last wrote: recorded in the table this
/// store had mapped before, it was lost to every other reader; the sync then fsynced the
/// same bytes a second time, and a rebuild after a cut would know less of the segment
/// durable (damage there would pass for a torn tail).
#[test]
fn a_sync_records_the_durable_length_in_the_current_table() {
    // One segment for everything: the growth must come from the keys, not from rotation.
    let (disk, _, syncing, growing) = two_stores_with_one_segment(4 << 20);
    syncing.put(b"first", b"x").unwrap();
    let (segments, index_bytes) = (growing.stats().segments, growing.stats().index_bytes);
    // More keys than the smallest table holds: the index grows into a new table file.
    for i in 0..20_000u32 {
        growing.put(&i.to_le_bytes(), b"v").unwrap();
    }
    assert_eq!(growing.stats().segments, segments, "no rotation");
    assert!(growing.stats().index_bytes > index_bytes, "the index grew");
    let sync = || fsyncs(&disk, || syncing.sync().unwrap());
    assert_eq!(sync(), 1, "one fsync, recorded where the next sync looks");
    assert_eq!(sync(), 0, "nothing left to sync");
}

/// A sync that another store's sync covered already makes no fsync of its own: every store
/// on the directory learns from the index how far the active segment is durable. A write
/// after it is synced again, and everything synced survives a power cut.
#[test]
fn a_sync_another_store_covered_makes_no_fsync_of_its_own() {
    let (disk, opts, first, second) = two_stores_with_one_segment(1 << 20);
    first.put(b"first", b"1").unwrap();
    second.put(b"second", b"2").unwrap();
    let sync = |store: &Store| fsyncs(&disk, || store.sync().unwrap());
    assert_eq!(sync(&second), 1, "both writes in one fsync");
    assert_eq!(sync(&first), 0, "covered by the other's");
    first.put(b"third", b"3").unwrap();
    assert_eq!(sync(&first), 1, "a new write is synced");
    for store in [first, second] {
        store.simulate_crash();
    }
    disk.power_cut();
    let store = Store::open(Path::new(SIM_DIR), opts).unwrap();
    for (k, v) in [("first", "1"), ("second", "2"), ("third", "3")] {
        assert_eq!(
            store.get(k.as_bytes()).unwrap().as_deref(),
            Some(v.as_bytes())
        );
    }
}
