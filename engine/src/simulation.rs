//! The deterministic simulation: from a seed, a random workload on stores sharing a
//! [`SimDisk`], with power cuts and disk faults at random points; after each cut the store
//! is recovered and checked against a model. A seed that fails replays exactly.
//!
//! The model is the list of writes acknowledged so far, and how many of them were durable
//! (a sync, a `Durability::Sync` write or a clean close returned). After a cut the store
//! must hold exactly the state after some prefix of the writes that keeps every durable one:
//! no synced write lost, no write kept without those before it, a batch whole or not at all,
//! and no value that was never written. A write that returned an error may be kept or not;
//! the epoch ends at it (the disk state is then uncertain, as the engine says).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::simdisk::{SimDisk, SimFaults, SimStats};
use crate::{Durability, Options, Store, WriteBatch};

/// Keys of a run: `k` and a byte below this.
const KEYS: u8 = 24;

/// What a store holds: the value of each of the run's keys, and any other key found (which
/// no write made, so a check fails on it). An array, not a map: the checks compare and
/// rebuild models after every write.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Model {
    values: Vec<Option<Vec<u8>>>,
    strays: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Model {
    fn new() -> Model {
        Model {
            values: vec![None; usize::from(KEYS)],
            strays: Vec::new(),
        }
    }

    fn slot(key: &[u8]) -> Option<usize> {
        match key {
            [b'k', i] if *i < KEYS => Some(usize::from(*i)),
            _ => None,
        }
    }

    fn insert(&mut self, key: Vec<u8>, value: Vec<u8>) {
        match Model::slot(&key) {
            Some(i) => self.values[i] = Some(value),
            None => self.strays.push((key, value)),
        }
    }

    fn remove(&mut self, key: &[u8]) {
        if let Some(i) = Model::slot(key) {
            self.values[i] = None;
        }
    }

    fn get(&self, key: &[u8]) -> Option<&Vec<u8>> {
        match Model::slot(key) {
            Some(i) => self.values[i].as_ref(),
            None => self.strays.iter().find(|(k, _)| k == key).map(|(_, v)| v),
        }
    }

    /// Every key held, with its value.
    fn iter(&self) -> impl Iterator<Item = (Vec<u8>, &Vec<u8>)> {
        let keys =
            (0..KEYS).filter_map(|i| Some((vec![b'k', i], self.values[usize::from(i)].as_ref()?)));
        keys.chain(self.strays.iter().map(|(k, v)| (k.clone(), v)))
    }
}

/// One acknowledged (or uncertain) write.
#[derive(Debug, Clone)]
enum Write {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
    Batch(Vec<(Vec<u8>, Option<Vec<u8>>)>),
}

impl Write {
    fn apply(&self, model: &mut Model) {
        let mut one = |key: &Vec<u8>, value: Option<&Vec<u8>>| match value {
            Some(v) => model.insert(key.clone(), v.clone()),
            None => model.remove(key),
        };
        match self {
            Write::Put(k, v) => one(k, Some(v)),
            Write::Delete(k) => one(k, None),
            Write::Batch(ops) => {
                for (k, v) in ops {
                    one(k, v.as_ref());
                }
            }
        }
    }
}

/// The value the last of `writes` to change `key` left, if any.
fn latest<'a>(writes: &'a [Write], key: &[u8]) -> Option<&'a Vec<u8>> {
    for w in writes.iter().rev() {
        match w {
            Write::Put(k, v) if k == key => return Some(v),
            Write::Delete(k) if k == key => return None,
            Write::Batch(ops) => {
                if let Some((_, v)) = ops.iter().rev().find(|(k, _)| k == key) {
                    return v.as_ref();
                }
            }
            _ => {}
        }
    }
    None
}

/// Whether to print every step (`LOGCACHE_SIM_TRACE` set), to follow a failing seed.
fn trace() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("LOGCACHE_SIM_TRACE").is_some())
}

impl Write {
    /// Keys and value lengths and first bytes, for a trace.
    fn brief(&self) -> String {
        let one = |k: &[u8], v: Option<&Vec<u8>>| match v {
            Some(v) => format!("{}={}:{}", k[1], v.len(), v.first().copied().unwrap_or(0)),
            None => format!("{}=del", k[1]),
        };
        match self {
            Write::Put(k, v) => one(k, Some(v)),
            Write::Delete(k) => one(k, None),
            Write::Batch(ops) => {
                let parts: Vec<String> = ops.iter().map(|(k, v)| one(k, v.as_ref())).collect();
                format!("batch[{}]", parts.join(" "))
            }
        }
    }
}

/// The source of a run's choices: a seeded generator, or a script (the fuzz input's bytes),
/// which libFuzzer mutates one decision at a time. A scripted run ends its workload when
/// the script runs out.
struct Rng<'a> {
    state: u64,
    script: Option<&'a [u8]>,
}

impl Rng<'_> {
    fn seeded(seed: u64) -> Rng<'static> {
        Rng {
            state: seed,
            script: None,
        }
    }

    fn next(&mut self) -> u64 {
        // splitmix64
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        let n = n.max(1);
        match &mut self.script {
            None => self.next() % n,
            Some(script) => {
                // One byte per choice, two for a choice among more than 256.
                let take = if n > 256 { 2 } else { 1 };
                let (now, rest) = script.split_at(take.min(script.len()));
                *script = rest;
                now.iter().fold(0u64, |v, &b| v << 8 | u64::from(b)) % n
            }
        }
    }

    fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    /// Whether a scripted run has used its whole script.
    fn exhausted(&self) -> bool {
        self.script.is_some_and(<[u8]>::is_empty)
    }
}

/// What one simulation did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimReport {
    /// Writes acknowledged.
    pub writes: u64,
    /// Power cuts after which the store was recovered and checked.
    pub checked_cuts: u64,
    /// Operations that failed with an injected fault (each a typed error).
    pub failed_ops: u64,
    /// Keys evicted to the size limit by compactions.
    pub evictions: u64,
    /// What the disk counted.
    pub disk: SimStats,
}

/// The store directory on the simulated disk.
const DIR: &str = "/sim/store";

/// The options of a run: everything on the simulated disk, no background work; in a quarter
/// of the runs a size limit, which each compaction then enforces by eviction.
fn options(rng: &mut Rng<'_>, disk: &Arc<SimDisk>) -> Options {
    let durability = [Durability::Flush, Durability::Sync][rng.below(2) as usize];
    let segment = [256u64, 1024, 4096, 32 << 10][rng.below(4) as usize];
    // Counted with the index file (about 100 KB at its smallest): from "evict every sealed
    // segment" to a few segments' worth.
    let limit = rng
        .one_in(4)
        .then(|| [100u64 << 10, 128 << 10, 192 << 10, 512 << 10][rng.below(4) as usize]);
    Options::default()
        .vfs(Arc::clone(disk) as Arc<dyn crate::vfs::Vfs>)
        .auto_compaction(false)
        .background(false)
        .durability(durability)
        .max_segment_size(segment)
        .max_disk_bytes(limit)
}

fn key(rng: &mut Rng<'_>) -> Vec<u8> {
    vec![b'k', rng.below(u64::from(KEYS)) as u8]
}

/// A value no other write has: the write's number, repeated.
fn value(rng: &mut Rng<'_>, n: u64) -> Vec<u8> {
    let len = if rng.one_in(16) {
        rng.below(3000)
    } else {
        rng.below(120)
    } as usize;
    let word = n.to_le_bytes();
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        v.extend_from_slice(&word[..(len - v.len()).min(8)]);
    }
    v
}

/// Everything `store` holds.
fn contents(store: &Store) -> crate::Result<Model> {
    let mut model = Model::new();
    for k in store.keys() {
        if let Some(v) = store.get(&k)? {
            model.insert(k, v);
        }
    }
    Ok(model)
}

/// Runs the simulation of `seed` for `epochs` power cuts; panics (with the seed in the
/// message) if the store breaks a guarantee.
pub fn run(seed: u64, epochs: u32, faults: bool) -> SimReport {
    simulate(Rng::seeded(seed), seed, epochs, faults)
}

/// Runs a simulation whose workload follows `script` (one byte per choice) until it runs
/// out, within at most `epochs` power cuts; the disk's own choices (what a cut keeps, where
/// a fault strikes) come from `seed`.
pub fn run_script(seed: u64, epochs: u32, faults: bool, script: &[u8]) -> SimReport {
    let rng = Rng {
        state: seed,
        script: Some(script),
    };
    simulate(rng, seed, epochs, faults)
}

fn simulate(mut rng: Rng<'_>, seed: u64, epochs: u32, faults: bool) -> SimReport {
    let fault_rates = if faults {
        let rate = |rng: &mut Rng<'_>| [0u16, 0, 300, 2000][rng.below(4) as usize];
        SimFaults {
            enospc: rate(&mut rng),
            sync_eio: rate(&mut rng),
            read_eio: rate(&mut rng),
            short_write: rate(&mut rng),
        }
    } else {
        SimFaults::default()
    };
    let disk = SimDisk::new(seed ^ 0x5EED_D15C, SimFaults::default());
    let opts = options(&mut rng, &disk);
    // Eviction drops keys the model still holds: reads then check what they find only.
    let evicting = opts.max_disk_bytes.is_some();
    let dir = Path::new(DIR);
    let mut writes: Vec<Write> = Vec::new();
    let mut durable = 0usize;
    let mut report = SimReport::default();
    for epoch in 0..epochs {
        if rng.exhausted() {
            break;
        }
        // Recovery runs on a sound disk: what it must find is what the cut left.
        disk.set_faults(SimFaults::default());
        let first = Store::open(dir, opts.clone())
            .unwrap_or_else(|e| panic!("seed {seed:#x}, epoch {epoch}: open after a cut: {e}"));
        if trace() {
            eprintln!("opened: {:?}", first.recovery_report());
        }
        check(&first, &mut writes, &mut durable, seed, epoch, evicting);
        report.checked_cuts += u64::from(epoch > 0);
        disk.set_faults(fault_rates);
        let mut stores = vec![first];
        let steps = 1 + rng.below(60);
        for _ in 0..steps {
            if rng.exhausted() {
                break;
            }
            let at = rng.below(stores.len() as u64) as usize;
            let store = &stores[at];
            let n = writes.len() as u64;
            let roll = rng.below(100);
            // The write an operation makes, if any, with its result.
            let outcome: (crate::Result<()>, Option<Write>) = match roll {
                0..=44 => {
                    let (k, v) = (key(&mut rng), value(&mut rng, n));
                    let result = if rng.one_in(5) {
                        // Expires long after the run: the expiry bookkeeping is exercised,
                        // and nothing expires under the model's feet.
                        store.put_with_ttl(&k, &v, Duration::from_secs(3600))
                    } else {
                        store.put(&k, &v)
                    };
                    (result, Some(Write::Put(k, v)))
                }
                45..=59 => {
                    let k = key(&mut rng);
                    (store.delete(&k).map(|_| ()), Some(Write::Delete(k)))
                }
                60..=72 => {
                    let mut batch = WriteBatch::new();
                    let mut ops = Vec::new();
                    for _ in 0..1 + rng.below(4) {
                        let k = key(&mut rng);
                        if rng.one_in(3) {
                            batch.delete(&k);
                            ops.push((k, None));
                        } else {
                            let v = value(&mut rng, n);
                            batch.put(&k, &v);
                            ops.push((k, Some(v)));
                        }
                    }
                    (store.write_batch(&batch), Some(Write::Batch(ops)))
                }
                73..=80 => {
                    let synced = store.sync();
                    if synced.is_ok() {
                        durable = writes.len();
                    }
                    (synced, None)
                }
                81..=86 => {
                    // Statistics walk the index: only a size limit needs them.
                    let evictions = || if evicting { store.stats().evictions } else { 0 };
                    let before = evictions();
                    let compacted = store.compact();
                    report.evictions += evictions().saturating_sub(before);
                    (compacted.map(|_| ()), None)
                }
                87..=92 => {
                    let k = key(&mut rng);
                    let got = store.get(&k);
                    if let Ok(got) = &got
                        && !(evicting && got.is_none())
                    {
                        assert_eq!(
                            got.as_ref(),
                            latest(&writes, &k),
                            "seed {seed:#x}, epoch {epoch}: a get disagrees with the model"
                        );
                    }
                    (got.map(|_| ()), None)
                }
                93..=96 if stores.len() < 2 => {
                    let opened = Store::open(dir, opts.clone()).map(|s| stores.push(s));
                    (opened, None)
                }
                _ => {
                    // A clean close of one handle (another may stay open).
                    let closing = stores.swap_remove(at);
                    let closed = closing.close();
                    if closed.is_ok() {
                        durable = writes.len();
                    }
                    if stores.is_empty() {
                        match Store::open(dir, opts.clone()) {
                            Ok(s) => stores.push(s),
                            Err(_) => {
                                report.failed_ops += 1;
                                break;
                            }
                        }
                    }
                    (closed, None)
                }
            };
            if trace() {
                eprintln!(
                    "epoch {epoch} store {at} roll {roll}: {:?} {:?} (durable {durable} of {})",
                    outcome.0.as_ref().err(),
                    outcome.1.as_ref().map(Write::brief),
                    writes.len()
                );
                let files: Vec<String> = disk
                    .listing()
                    .into_iter()
                    .filter(|f| f.0.extension().is_some_and(|e| e == "data"))
                    .map(|(p, len, differ, named)| {
                        let name = p.file_name().unwrap().to_string_lossy().into_owned();
                        format!(
                            "{}:{len}/{differ}{}",
                            &name[9..16],
                            if named { "" } else { "?" }
                        )
                    })
                    .collect();
                eprintln!("    {}", files.join(" "));
            }
            match outcome {
                (Ok(()), Some(w)) => {
                    writes.push(w);
                    report.writes += 1;
                    if opts.durability == Durability::Sync {
                        durable = writes.len();
                    }
                }
                (Ok(()), None) => {}
                (Err(_), w) => {
                    // The disk state is uncertain from here: the failed write (if one) may or
                    // may not be kept, and the epoch ends in a cut.
                    writes.extend(w);
                    report.failed_ops += 1;
                    break;
                }
            }
        }
        for store in stores {
            store.simulate_crash();
        }
        if trace() {
            for f in disk.listing() {
                eprintln!("  {f:?}");
            }
            dump(&disk);
            eprintln!("power cut");
        }
        disk.power_cut();
    }
    disk.set_faults(SimFaults::default());
    if trace() {
        dump(&disk);
    }
    let store = Store::open(dir, opts)
        .unwrap_or_else(|e| panic!("seed {seed:#x}: open after the last cut: {e}"));
    check(&store, &mut writes, &mut durable, seed, epochs, evicting);
    // The last cut, if there was one (a script may run out before the first epoch).
    report.checked_cuts += u64::from(disk.stats().power_cuts > 0);
    store.simulate_crash();
    report.disk = disk.stats();
    report
}

/// Prints the records of every segment file (for a trace).
fn dump(disk: &SimDisk) {
    for (path, ..) in disk.listing() {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !name.ends_with(".data") {
            continue;
        }
        let bytes = disk.contents(&path).unwrap_or_default();
        let recs: Vec<String> = crate::scan::Records::skipping_damage(&bytes, 2, 0)
            .map(|(at, r)| {
                let v = r.value.first().copied().unwrap_or(0);
                let del = if r.is_tombstone() { "del" } else { "" };
                format!("{at}:{}={}:{v}{del}", r.key[1], r.value.len())
            })
            .collect();
        eprintln!("  {name}: {}", recs.join(" "));
    }
}

/// Checks that `store` holds the state after a prefix of `writes` that keeps every durable
/// one, and cuts `writes` to the longest such prefix (all of it durable now: it survived).
///
/// Under a size limit (`evicting`) the store may lack keys: it must hold a part of such a
/// state, every value it holds the one that state says (an evicted key never comes back
/// with an older value). The keys it lacks count as deleted from then on, so that a later
/// return of any value of theirs is caught.
fn check(
    store: &Store,
    writes: &mut Vec<Write>,
    durable: &mut usize,
    seed: u64,
    epoch: u32,
    evicting: bool,
) {
    let found = contents(store)
        .unwrap_or_else(|e| panic!("seed {seed:#x}, epoch {epoch}: reading the store: {e}"));
    let fits = |model: &Model| {
        if evicting {
            found.iter().all(|(k, v)| model.get(&k) == Some(v))
        } else {
            *model == found
        }
    };
    let mut model = Model::new();
    for w in &writes[..*durable] {
        w.apply(&mut model);
    }
    let mut kept = None;
    if fits(&model) {
        kept = Some(*durable);
    }
    for (i, w) in writes.iter().enumerate().skip(*durable) {
        w.apply(&mut model);
        if fits(&model) {
            kept = Some(i + 1);
        }
    }
    let Some(kept) = kept else {
        let mut all = Model::new();
        for w in &writes[..*durable] {
            w.apply(&mut all);
        }
        let show = |v: Option<&Vec<u8>>| v.map(|v| (v.len(), v.first().copied()));
        let differ: Vec<_> = all
            .iter()
            .chain(found.iter())
            .map(|(k, _)| k)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .filter(|k| all.get(k) != found.get(k))
            .map(|k| (k.clone(), show(all.get(&k)), show(found.get(&k))))
            .collect();
        panic!(
            "seed {seed:#x}, epoch {epoch}: the store holds no prefix of the writes that keeps \
             the {durable} durable ones of {}; against the durable ones, (key, expected \
             (len, first byte), found): {differ:?}",
            writes.len()
        );
    };
    writes.truncate(kept);
    if evicting {
        let mut model = Model::new();
        for w in writes.iter() {
            w.apply(&mut model);
        }
        let evicted: Vec<Vec<u8>> = model
            .iter()
            .map(|(k, _)| k)
            .filter(|k| found.get(k).is_none())
            .collect();
        writes.extend(evicted.into_iter().map(Write::Delete));
    }
    *durable = writes.len();
}

/// The fuzz target's body. `data` is the disk's seed (8 bytes), a byte whose low bit turns
/// faults on and whose other bits give the epochs (1 to 3), then the workload's script, one
/// byte per choice (see [`run_script`]). Without a script, the workload comes from the seed
/// ([`run`]): the committed corpus of seeds runs so.
pub fn simulation(data: &[u8]) {
    if data.len() < 9 {
        return;
    }
    let seed = u64::from_le_bytes(data[..8].try_into().expect("8 bytes"));
    let faults = data[8] & 1 == 1;
    let epochs = 1 + u32::from(data[8] >> 1) % 3;
    match &data[9..] {
        [] => run(seed, epochs, faults),
        script => run_script(seed, epochs, faults, script),
    };
}
