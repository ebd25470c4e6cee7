//! Peak memory of a process, sampled from `/proc/PID/status`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// Resident and anonymous (heap, not file-backed) kB of `pid`, if it is alive.
fn resident_kb(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches(" kB").parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("RssAnon:")?))
}

/// Raises the peaks to the current resident and anonymous kB of process `pid`.
fn sample(pid: &AtomicU32, peak_rss: &AtomicU64, peak_anon: &AtomicU64) {
    if let Some((rss, anon)) = resident_kb(pid.load(Ordering::Relaxed)) {
        peak_rss.fetch_max(rss, Ordering::Relaxed);
        peak_anon.fetch_max(anon, Ordering::Relaxed);
    }
}

/// Samples a process's resident memory every 10 ms in a thread and keeps the peaks. The
/// process can be changed while sampling (a server restarted).
pub struct Sampler {
    pid: Arc<AtomicU32>,
    peak_rss: Arc<AtomicU64>,
    peak_anon: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sampler {
    /// Starts sampling `pid`.
    pub fn start(pid: u32) -> Sampler {
        let pid = Arc::new(AtomicU32::new(pid));
        let peak_rss = Arc::new(AtomicU64::new(0));
        let peak_anon = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (pid, peak_rss, peak_anon, stop) = (
                pid.clone(),
                peak_rss.clone(),
                peak_anon.clone(),
                stop.clone(),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    sample(&pid, &peak_rss, &peak_anon);
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        Sampler {
            pid,
            peak_rss,
            peak_anon,
            stop,
            thread: Some(thread),
        }
    }

    /// Samples `pid` from now on.
    pub fn follow(&self, pid: u32) {
        self.pid.store(pid, Ordering::Relaxed);
    }

    /// Takes one sample now (before a process exits, say).
    pub fn sample_now(&self) {
        sample(&self.pid, &self.peak_rss, &self.peak_anon);
    }

    /// Stops and returns the peaks in MB: (resident, anonymous).
    pub fn finish(mut self) -> (f64, f64) {
        self.sample_now();
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        let mb = |kb: &AtomicU64| kb.load(Ordering::Relaxed) as f64 * 1024.0 / 1e6;
        (mb(&self.peak_rss), mb(&self.peak_anon))
    }
}
