//! Runs the `simulation` fuzz target's body on consecutive seeds, as libFuzzer would run its
//! inputs, and prints how many runs per second it managed (docs/fuzzing.md).
//!
//! `cargo run --release -p logcache-engine --features fuzzing --example simulate -- [RUNS]`

use std::time::Instant;

fn main() {
    let runs: u64 = std::env::args()
        .nth(1)
        .map_or(10_000, |n| n.parse().expect("RUNS is a number"));
    let start = Instant::now();
    for seed in 0..runs {
        // The target's input: an 8-byte seed, then the fault switch and the epoch count.
        let mut input = seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .to_le_bytes()
            .to_vec();
        input.push((seed % 6) as u8);
        logcache_engine::simulation::simulation(&input);
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{runs} runs in {secs:.2} s: {:.0} runs/s",
        runs as f64 / secs
    );
}
