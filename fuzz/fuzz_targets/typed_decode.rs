#![no_main]
//! See docs/fuzzing.md: the body is `logcache::fuzz::typed_decode`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    logcache::fuzz::typed_decode(data);
});
