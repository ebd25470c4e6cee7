//! Runs the `simulation` fuzz target's body as libFuzzer would run its inputs, and prints
//! how many runs per second it managed and how many power cuts it checked
//! (docs/fuzzing.md).
//!
//! `cargo run --release -p logcache-engine --features fuzzing --example simulate -- [RUNS]
//! [SCRIPT_LEN]`: each run is the target's input for a seed: the fault switch and 1 to 3
//! epochs, then `SCRIPT_LEN` bytes of script (0, the default: the workload comes from the
//! seed).

use std::time::Instant;

use logcache_engine::simulation;

fn main() {
    let mut args = std::env::args().skip(1);
    let runs: u64 = args
        .next()
        .map_or(10_000, |n| n.parse().expect("RUNS is a number"));
    let script_len: u64 = args
        .next()
        .map_or(0, |n| n.parse().expect("SCRIPT_LEN is a number"));
    let start = Instant::now();
    let (mut cuts, mut writes) = (0, 0);
    for seed in 0..runs {
        let mix = |i: u64| (i ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let (faults, epochs) = (seed % 2 == 1, 1 + (seed / 2 % 3) as u32);
        let script: Vec<u8> = (0..script_len).map(|i| (mix(i) >> 56) as u8).collect();
        let report = if script.is_empty() {
            simulation::run(mix(u64::MAX), epochs, faults)
        } else {
            simulation::run_script(mix(u64::MAX), epochs, faults, &script)
        };
        cuts += report.checked_cuts;
        writes += report.writes;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{runs} runs in {secs:.2} s: {:.0} runs/s; {cuts} power cuts checked, {writes} writes",
        runs as f64 / secs
    );
}
