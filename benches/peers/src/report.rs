//! The runs collected so far, as JSON, Markdown tables and PNG charts.

use std::collections::BTreeMap;
use std::path::Path;

use logcache_benches::Spread;
use logcache_benches::plot::{Bars, bar_chart};
use serde::{Deserialize, Serialize};

use logcache_workload::{METRICS, Metric, Run, Unit};

/// Every run, by value size and engine.
#[derive(Serialize, Deserialize)]
pub struct Results {
    keys: usize,
    reps: usize,
    machine: String,
    runs: BTreeMap<usize, BTreeMap<String, Vec<Run>>>,
}

/// `x` in three significant figures with a k or M suffix.
fn ops(x: f64) -> String {
    let (v, suffix) = if x >= 1e6 {
        (x / 1e6, "M")
    } else if x >= 1e3 {
        (x / 1e3, "k")
    } else {
        (x, "")
    };
    let digits = if v >= 100.0 || suffix.is_empty() {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    format!("{v:.digits$}{suffix}")
}

fn show(x: f64, unit: Unit) -> String {
    match unit {
        Unit::Ops => ops(x),
        Unit::Millis | Unit::Megabytes if x >= 10.0 => format!("{x:.0}"),
        Unit::Seconds if x == 0.0 => "—".into(),
        _ => format!("{x:.1}"),
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem_gb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores ({cpu}), {mem_gb:.0} GiB RAM, Linux")
}

impl Results {
    /// No runs yet.
    pub fn new(keys: usize, reps: usize) -> Results {
        Results {
            keys,
            reps,
            machine: machine(),
            runs: BTreeMap::new(),
        }
    }

    /// Reads runs saved by [`Results::save`].
    pub fn load(path: &Path) -> Results {
        serde_json::from_slice(&std::fs::read(path).unwrap()).expect("a peers.json")
    }

    /// Adds one run.
    pub fn add(&mut self, size: usize, engine: &str, run: Run) {
        let by_engine = self.runs.entry(size).or_default();
        by_engine.entry(engine.to_string()).or_default().push(run);
    }

    /// Writes every run so far as JSON (after each run, so a stopped run keeps its data).
    pub fn save(&self, path: &Path) {
        std::fs::write(path, serde_json::to_vec_pretty(self).unwrap()).unwrap();
    }

    fn spread(&self, size: usize, engine: &str, m: &Metric) -> Option<Spread> {
        let runs = self.runs.get(&size)?.get(engine)?;
        (!runs.is_empty()).then(|| Spread::of(&runs.iter().map(m.value).collect::<Vec<_>>()))
    }

    /// The tables: per value size, every metric for every engine, as median (min–max) and
    /// ratio to logcache; then throughputs as shares of the raw-disk reference.
    pub fn markdown(&self, sizes: &[usize], engines: &[String]) -> String {
        let mut md = String::new();
        let push = |md: &mut String, s: String| {
            md.push_str(&s);
            md.push('\n');
        };
        push(
            &mut md,
            format!(
                "Machine: {}. {} keys of 16 B; median (min–max) of {} runs; ×N = ratio to \
                 logcache.\n",
                self.machine, self.keys, self.reps
            ),
        );
        for &size in sizes {
            push(&mut md, format!("#### Values of {size} B\n"));
            let header: String = engines.iter().map(|e| format!(" {e} |")).collect();
            push(&mut md, format!("| workload |{header}"));
            push(&mut md, format!("|---|{}", "---|".repeat(engines.len())));
            for m in METRICS {
                let ours = self.spread(size, "logcache", m).map(|s| s.median);
                let mut row = format!("| {} |", m.label);
                for e in engines {
                    let cell = match self.spread(size, e, m) {
                        None => "n/a".to_string(),
                        Some(s) if s.max == 0.0 => "—".into(),
                        Some(s) => {
                            let ratio = match ours {
                                Some(o) if o > 0.0 => format!(" ×{:.2}", s.median / o),
                                _ => String::new(),
                            };
                            format!(
                                "{} ({}–{}){ratio}",
                                show(s.median, m.unit),
                                show(s.min, m.unit),
                                show(s.max, m.unit)
                            )
                        }
                    };
                    row.push_str(&format!(" {cell} |"));
                }
                push(&mut md, row);
            }
            push(&mut md, String::new());
            push(
                &mut md,
                format!(
                    "Share of the raw-disk reference (buffered append for writes, a HashMap for \
                     reads), values of {size} B:\n"
                ),
            );
            let peers: Vec<&String> = engines.iter().filter(|e| *e != "raw").collect();
            let header: String = peers.iter().map(|e| format!(" {e} |")).collect();
            push(&mut md, format!("| workload | raw |{header}"));
            push(&mut md, format!("|---|---|{}", "---|".repeat(peers.len())));
            for m in METRICS.iter().filter(|m| m.unit == Unit::Ops) {
                let Some(raw) = self.spread(size, "raw", m).filter(|raw| raw.median > 0.0) else {
                    continue;
                };
                let mut row = format!("| {} | {} |", m.label, ops(raw.median));
                for e in &peers {
                    let cell = self
                        .spread(size, e, m)
                        .map_or("n/a".into(), |s| format!("{:.3}", s.median / raw.median));
                    row.push_str(&format!(" {cell} |"));
                }
                push(&mut md, row);
            }
            push(&mut md, String::new());
        }
        md
    }

    /// One chart per value size: every throughput as a ratio to logcache (log scale), bars
    /// at the median with min–max whiskers.
    pub fn charts(&self, out: &Path, sizes: &[usize], engines: &[String]) {
        let throughputs: Vec<&Metric> = METRICS.iter().filter(|m| m.unit == Unit::Ops).collect();
        let groups: Vec<String> = throughputs.iter().map(|m| m.short.to_string()).collect();
        for &size in sizes {
            let bars: Vec<Bars> = engines
                .iter()
                .map(|e| Bars {
                    label: e.clone(),
                    values: throughputs
                        .iter()
                        .map(|m| {
                            let ours = self.spread(size, "logcache", m)?.median;
                            // An engine that did not run a workload has no bar.
                            let s = self.spread(size, e, m).filter(|s| s.max > 0.0)?;
                            Some((s.min / ours, s.median / ours, s.max / ours))
                        })
                        .collect(),
                })
                .collect();
            let path = out.join(format!("peers-{size}.png"));
            let title = format!(
                "{} keys, {size} B values: throughput relative to logcache (log scale)",
                self.keys
            );
            if let Err(e) = bar_chart(&path, &title, "× logcache", &groups, &bars) {
                eprintln!("no chart {}: {e}", path.display());
            }
        }
    }
}
