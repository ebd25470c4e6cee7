#![no_main]
//! See docs/fuzzing.md: the body is `logcache_engine::simulation::simulation`, a
//! deterministic simulation on a simulated disk with power cuts and faults.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    logcache_engine::simulation::simulation(data);
});
