#![no_main]
//! See docs/fuzzing.md: the body is `logcache_engine::fuzz::ops_model`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    logcache_engine::fuzz::ops_model(data);
});
