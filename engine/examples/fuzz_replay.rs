//! Runs a fuzz target's body over every file of a corpus directory, a number of rounds, and
//! prints executions per second: for profiling a body outside libFuzzer.
//!
//! `cargo run --release -p logcache-engine --features fuzzing --example fuzz_replay -- TARGET DIR [ROUNDS]`

use std::time::Instant;

use logcache_engine::fuzz;

fn main() {
    let mut args = std::env::args().skip(1);
    let target = args.next().expect("TARGET");
    let dir = args.next().expect("DIR");
    let rounds: usize = args
        .next()
        .map_or(1, |r| r.parse().expect("ROUNDS is a number"));
    let body: fn(&[u8]) = match target.as_str() {
        "ops_model" => fuzz::ops_model,
        "crash_recovery" => fuzz::crash_recovery,
        "damage_skip" => fuzz::damage_skip,
        "record_decode" => fuzz::record_decode,
        "hint_decode" => fuzz::hint_decode,
        "index_decode" => fuzz::index_decode,
        "simulation" => logcache_engine::simulation::simulation,
        other => panic!("no target {other}"),
    };
    let inputs: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .expect("DIR")
        .map(|e| std::fs::read(e.expect("entry").path()).expect("input"))
        .collect();
    let start = Instant::now();
    for _ in 0..rounds {
        for input in &inputs {
            body(input);
        }
    }
    let n = rounds * inputs.len();
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{target}: {n} executions in {secs:.2} s, {:.0}/s",
        n as f64 / secs
    );
}
