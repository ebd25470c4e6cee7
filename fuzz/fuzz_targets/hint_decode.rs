#![no_main]
//! See docs/fuzzing.md: the body is `logcache_engine::fuzz::hint_decode`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    logcache_engine::fuzz::hint_decode(data);
});
