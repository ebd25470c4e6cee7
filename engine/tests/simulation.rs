//! The deterministic simulation (`logcache_engine::simulation`) on fixed seeds: random
//! workloads on a simulated disk, power cuts at random points, with and without injected
//! faults; after every cut the store must hold a prefix of the acknowledged writes that keeps
//! every durable one. A failing seed is printed and replays exactly.

use std::time::{Duration, Instant};

use logcache_engine::simulation::{self, SimReport};

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
    assert!(total.checked_cuts >= 3 * runs, "every cut was checked");
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
    for seed in [7u64, 1 << 40, 12345] {
        assert_eq!(
            simulation::run(seed, 2, true),
            simulation::run(seed, 2, true)
        );
    }
}

#[test]
#[ignore]
fn replay_one() {
    let seed = std::env::var("SEED").map_or(7, |s| s.parse().unwrap());
    simulation::run(seed, 2, std::env::var("FAULTS").is_ok());
}
