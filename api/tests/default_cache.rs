//! `#[memoize]` without a `cache` option uses a disk cache in `$LOGCACHE_DIR`. (A file of its
//! own: the default cache is one per process.)

use std::sync::atomic::{AtomicUsize, Ordering};

use logcache::memoize;

static CALLS: AtomicUsize = AtomicUsize::new(0);

#[memoize]
fn double(n: u32) -> u32 {
    CALLS.fetch_add(1, Ordering::SeqCst);
    n * 2
}

#[test]
fn the_default_cache_lives_in_logcache_dir() {
    let dir = tempfile::tempdir().unwrap();
    // SAFETY of the test: this binary has one test, so no other thread reads the environment.
    unsafe { std::env::set_var("LOGCACHE_DIR", dir.path()) };
    assert_eq!(double(21), 42);
    assert_eq!(double(21), 42);
    assert_eq!(CALLS.load(Ordering::SeqCst), 1);
    assert_eq!(logcache::memo::default_cache().backend().name(), "disk");
    logcache::memo::default_cache().flush().unwrap();
    let segments = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".data")
        })
        .count();
    assert!(segments >= 1, "the memoized result is on disk");
}
