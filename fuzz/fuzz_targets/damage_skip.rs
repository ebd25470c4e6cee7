#![no_main]
//! See docs/fuzzing.md: the body is `logcache_engine::fuzz::damage_skip`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    logcache_engine::fuzz::damage_skip(data);
});
