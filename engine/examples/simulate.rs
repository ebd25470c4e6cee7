//! Runs the `simulation` fuzz target's body as libFuzzer would run its inputs, and prints
//! how many runs per second it managed (docs/fuzzing.md).
//!
//! `cargo run --release -p logcache-engine --features fuzzing --example simulate -- [RUNS]
//! [SCRIPT_LEN]`: each input is an 8-byte seed, the fault switch and epoch count, then
//! `SCRIPT_LEN` bytes of script (0, the default: the workload comes from the seed).

use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let runs: u64 = args
        .next()
        .map_or(10_000, |n| n.parse().expect("RUNS is a number"));
    let script_len: u64 = args
        .next()
        .map_or(0, |n| n.parse().expect("SCRIPT_LEN is a number"));
    let start = Instant::now();
    for seed in 0..runs {
        let mix = |i: u64| (i ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut input = mix(u64::MAX).to_le_bytes().to_vec();
        input.push((seed % 6) as u8);
        input.extend((0..script_len).map(|i| (mix(i) >> 56) as u8));
        logcache_engine::simulation::simulation(&input);
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{runs} runs in {secs:.2} s: {:.0} runs/s",
        runs as f64 / secs
    );
}
