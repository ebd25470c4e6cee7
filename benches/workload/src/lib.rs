//! The workloads of logcache's peer comparison, shared by the peer harness
//! (`logcache-peers`) and `logcache bench`: an [`Engine`] interface, logcache's engine behind
//! it, the workloads ([`run()`]) and their figures ([`Run`]), and the helpers they use.

pub mod engine;
pub mod memory;
pub mod run;

use std::time::{Duration, Instant};

pub use engine::{Engine, Key, Logcache};
pub use run::{METRICS, Metric, PROCESS_COUNTS, PROCESS_MIX_TIME, Run, Unit, process_mix, run};

/// Deterministic pseudo-random numbers (splitmix64) for workloads.
pub struct Rng(u64);

impl Rng {
    /// A generator with a fixed seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// `0..n` in random order.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut v: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
        v
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

/// The 16-byte key of item `i`: its number in sixteen decimal digits.
pub fn key16(i: usize) -> [u8; 16] {
    let mut k = [b'0'; 16];
    let mut n = i;
    for slot in k.iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
    }
    k
}

/// Times `f` once.
pub fn time<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let start = Instant::now();
    let out = f();
    (start.elapsed(), out)
}

/// Operations per second of `ops` operations taking `d`.
pub fn ops_per_sec(ops: usize, d: Duration) -> f64 {
    ops as f64 / d.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_sixteen_digits() {
        assert_eq!(&key16(42), b"0000000000000042");
        assert_eq!(&key16(1_000_000), b"0000000001000000");
    }

    #[test]
    fn permutation_is_a_permutation() {
        let mut p = Rng::new(1).permutation(1000);
        p.sort_unstable();
        assert_eq!(p, (0..1000).collect::<Vec<_>>());
    }
}
