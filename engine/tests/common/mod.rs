//! Helpers shared by the engine's integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use logcache_engine::{Options, Store};

/// Default options without the background thread, for tests that inspect files and figures
/// it would change underneath them.
pub fn manual() -> Options {
    Options::default().auto_compaction(false)
}

/// Everything the store holds, read through `keys` and `get`.
pub fn contents(store: &Store) -> BTreeMap<Vec<u8>, Vec<u8>> {
    store
        .keys()
        .map(|k| {
            let v = store.get(&k).unwrap().expect("listed key has a value");
            (k, v)
        })
        .collect()
}

/// Copies the regular files of `from` into `to` (created).
pub fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// Files of `dir` with extension `ext`, sorted (for segment and hint files: by id).
pub fn files_with_extension(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    files.sort();
    files
}

/// Segment files of a store directory, ascending by id.
pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    files_with_extension(dir, "data")
}

/// The segment id in a segment file's name (sixteen hex digits).
pub fn segment_id(path: &Path) -> u64 {
    u64::from_str_radix(path.file_stem().unwrap().to_str().unwrap(), 16).unwrap()
}

/// A small deterministic pseudo-random generator (xorshift64*), so failures can be replayed
/// from the printed seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// A seed from the clock, printed so that a failing run can be repeated.
    pub fn from_clock(name: &str) -> Rng {
        let seed = std::env::var("LOGCACHE_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("{name}: LOGCACHE_TEST_SEED={seed}");
        Rng::new(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo)
    }
}

/// Fills the rest of the active segment (created with `segment_size`) with one record under
/// `key`, so that the next write starts a new segment.
pub fn fill_active_segment(store: &Store, segment_size: u64, key: &[u8]) {
    let (_, end) = store.log_position();
    let left = segment_size - end;
    let value_len = left - 21 - key.len() as u64;
    store.put(key, &vec![0xf1; value_len as usize]).unwrap();
    assert_eq!(store.log_position().1, segment_size, "the segment is full");
}

/// The `main` of a test binary with `harness = false`: runs the `tests` whose names contain
/// one of the command line's filters (all if none), prints each result, exits 1 if any failed.
pub fn run_tests(tests: &[(&str, fn())]) {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let (mut passed, mut failed) = (0, 0);
    for &(name, test) in tests {
        if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let ok = std::panic::catch_unwind(test).is_ok();
        println!("test {name} ... {}", if ok { "ok" } else { "FAILED" });
        if ok {
            passed += 1;
        } else {
            failed += 1;
        }
    }
    println!("\n{passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}
