//! The fuzz targets' bodies under `cargo test`: every committed corpus input (fuzz/corpus/),
//! then a few thousand random inputs. See docs/fuzzing.md for running them under libFuzzer.

mod common;

use std::path::Path;

use logcache_engine::fuzz;

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        panic!("no corpus at {}", dir.display());
    };
    let inputs: Vec<Vec<u8>> = entries
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert!(!inputs.is_empty(), "the corpus of {target} is empty");
    inputs
}

fn random_inputs(name: &str, count: usize, max_len: u64) -> impl Iterator<Item = Vec<u8>> {
    let mut rng = common::Rng::from_clock(name);
    (0..count).map(move |_| {
        let len = rng.range(0, max_len + 1) as usize;
        (0..len).map(|_| rng.next_u64() as u8).collect()
    })
}

fn run(target: &str, body: fn(&[u8]), random: usize, max_len: u64) {
    for input in corpus(target) {
        body(&input);
    }
    for input in random_inputs(target, random, max_len) {
        body(&input);
    }
}

#[test]
fn ops_model() {
    run("ops_model", fuzz::ops_model, 1500, 600);
}

#[test]
fn crash_recovery() {
    run("crash_recovery", fuzz::crash_recovery, 1500, 600);
}

#[test]
fn damage_skip() {
    run("damage_skip", fuzz::damage_skip, 1500, 600);
}

#[test]
fn record_decode() {
    run("record_decode", fuzz::record_decode, 3000, 400);
}

#[test]
fn hint_decode() {
    run("hint_decode", fuzz::hint_decode, 1500, 400);
}

#[test]
fn index_decode() {
    run("index_decode", fuzz::index_decode, 1500, 200);
}

#[test]
fn simulation_scripts() {
    // The scripted inputs of the corpus (a 9-byte input is a seeded run, which
    // engine/tests/simulation.rs covers), then random scripts.
    let scripted: Vec<Vec<u8>> = corpus("simulation")
        .into_iter()
        .filter(|input| input.len() > 9)
        .collect();
    assert!(scripted.len() > 100, "the corpus holds scripted inputs");
    for input in scripted {
        logcache_engine::simulation::simulation(&input);
    }
    for input in random_inputs("simulation", 300, 200) {
        logcache_engine::simulation::simulation(&input);
    }
}
