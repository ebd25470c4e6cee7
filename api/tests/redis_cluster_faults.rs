//! The Redis backend on a Redis Cluster of its own (three masters that this test starts on
//! free loopback ports): namespaces spread over the nodes; a node stopped mid-run makes the
//! keys it holds a typed error while the others are served; restarted with its data lost, it
//! serves misses, never an old or wrong value. Needs `redis-server` and `redis-cli` on the
//! PATH; without them the test says so and skips, except under CI, where it fails.
#![cfg(feature = "redis")]

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use logcache::{Cache, CacheBuilder, Error, RedisBackend};

fn tools_available() -> bool {
    let found = Command::new("redis-server")
        .arg("--version")
        .output()
        .is_ok()
        && Command::new("redis-cli").arg("--version").output().is_ok();
    if !found {
        let why = "redis-server or redis-cli is not installed: the cluster fault test is NOT run";
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{why} (CI=true)"
        );
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
    }
    found
}

/// One node: its port and its directory (which keeps `nodes.conf`, so a restarted node
/// rejoins with its slots; persistence is off, so its data is gone).
struct Node {
    port: u16,
    child: Option<Child>,
}

impl Node {
    fn start(&mut self, dir: &Path) {
        let dir = dir.join(self.port.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ])
            .args(["--cluster-node-timeout", "1000"])
            // The other nodes keep serving their slots while one is down.
            .args(["--cluster-require-full-coverage", "no"])
            .args(["--save", "", "--appendonly", "no"])
            .current_dir(&dir)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        eventually("the node to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        });
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

fn eventually(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn cluster_ok(port: u16) -> bool {
    cli(port, &["cluster", "info"]).contains("cluster_state:ok")
}

/// The port of the node that serves `ns`'s keys (where its counter lives).
fn node_of(cache: &Cache, ns: &str, ports: &[u16]) -> u16 {
    let _ = cache;
    // The counter key of namespace `ns`, as the backend names it: find it on each node.
    for &port in ports {
        let keys = cli(port, &["--scan", "--pattern", &format!("*counter:ns:{ns}")]);
        if !keys.trim().is_empty() {
            return port;
        }
    }
    panic!("no node holds namespace {ns}")
}

/// Starts three masters in `dir` and joins them into a cluster; the cache on it.
fn start_cluster(dir: &Path) -> (Vec<Node>, Vec<u16>, Cache) {
    let mut nodes: Vec<Node> = (0..3)
        .map(|_| Node {
            port: common::free_cluster_port(),
            child: None,
        })
        .collect();
    for node in &mut nodes {
        node.start(dir);
    }
    let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();
    let addresses: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let created = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addresses)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(created.success());
    eventually("the cluster to form", || {
        ports.iter().all(|&p| cluster_ok(p))
    });

    let urls: Vec<String> = ports
        .iter()
        .map(|p| format!("redis://127.0.0.1:{p}"))
        .collect();
    let cache = CacheBuilder::new()
        .backend(
            RedisBackend::cluster(&urls)
                .unwrap()
                .with_timeout(Duration::from_millis(300)),
        )
        .build()
        .unwrap();
    (nodes, ports, cache)
}

#[test]
fn a_node_down_fails_its_keys_only_and_comes_back_empty_never_wrong() {
    if !tools_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, ports, cache) = start_cluster(dir.path());
    // Enough namespaces that each node holds some; each clears once (so its counter exists)
    // and stores ten values.
    let names: Vec<String> = (0..30).map(|i| format!("ns{i}")).collect();
    for name in &names {
        let ns = cache.namespace(name);
        ns.clear().unwrap();
        for k in 0..10u32 {
            ns.set(&k, &format!("{name}/{k}")).unwrap();
        }
    }
    let owner: Vec<u16> = names.iter().map(|n| node_of(&cache, n, &ports)).collect();
    for &port in &ports {
        assert!(
            owner.contains(&port),
            "every node holds some namespaces: {owner:?}"
        );
    }

    // Stop one node: its namespaces fail with a typed error, the others are served.
    let down = ports[1];
    nodes[1].kill();
    for (name, &port) in names.iter().zip(&owner) {
        let got = cache.namespace(name).get::<String>(&3u32);
        if port == down {
            assert!(matches!(got, Err(Error::Backend { .. })), "{name}: {got:?}");
        } else {
            let got = got.unwrap_or_else(|e| panic!("{name} (on a live node): {e}"));
            assert_eq!(got.as_deref(), Some(format!("{name}/3").as_str()));
        }
    }

    // Restart it, its data lost (persistence off): it rejoins with its slots, and its
    // namespaces read as empty (their counters went with their entries: one slot), never as
    // an old value; the others still hold theirs.
    nodes[1].start(dir.path());
    eventually("the cluster to heal", || {
        ports.iter().all(|&p| cluster_ok(p))
    });
    eventually("the cache to reach the node again", || {
        let i = owner.iter().position(|&p| p == down).unwrap();
        cache.namespace(&names[i]).get::<String>(&3u32).is_ok()
    });
    for (name, &port) in names.iter().zip(&owner) {
        let ns = cache.namespace(name);
        for k in 0..10u32 {
            let got = ns.get::<String>(&k).unwrap();
            if port == down {
                assert_eq!(got, None, "{name}");
            } else {
                assert_eq!(got.as_deref(), Some(format!("{name}/{k}").as_str()));
            }
        }
        ns.set(&0u32, &"again".to_string()).unwrap();
        assert_eq!(ns.get::<String>(&0u32).unwrap().as_deref(), Some("again"));
    }
}

/// `ns`'s value for key `k` written in round `round`.
fn versioned(ns: &str, k: u32, round: u32) -> String {
    format!("{ns}/{k}/{round}")
}

#[test]
fn resharding_under_load_serves_the_latest_value_or_a_typed_error() {
    if !tools_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_nodes, ports, cache) = start_cluster(dir.path());
    let names: Vec<String> = (0..30).map(|i| format!("ns{i}")).collect();
    for name in &names {
        let ns = cache.namespace(name);
        ns.clear().unwrap();
        for k in 0..5u32 {
            ns.set(&k, &versioned(name, k, 0)).unwrap();
        }
    }
    let before: Vec<u16> = names.iter().map(|n| node_of(&cache, n, &ports)).collect();
    let id = |port: u16| cli(port, &["cluster", "myid"]).trim().to_string();
    let (from, to) = (id(ports[0]), id(ports[1]));

    // Move the first node's slots (keys and all, by MIGRATE) to the second while this
    // thread writes and reads every namespace.
    let reshard = {
        let at = format!("127.0.0.1:{}", ports[0]);
        thread::spawn(move || {
            Command::new("redis-cli")
                .args(["--cluster", "reshard", &at])
                .args(["--cluster-from", &from, "--cluster-to", &to])
                .args(["--cluster-slots", "5461", "--cluster-yes"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap()
        })
    };
    // What each (namespace, key) holds: the round of its last acknowledged write, or
    // unknown after a failed write (it may or may not have landed).
    let mut latest = vec![[Some(0u32); 5]; names.len()];
    let (mut round, mut failed) = (0u32, 0u64);
    while !reshard.is_finished() || round < 3 {
        round += 1;
        for (i, name) in names.iter().enumerate() {
            let ns = cache.namespace(name);
            let k = round % 5;
            latest[i][k as usize] = match ns.set(&k, &versioned(name, k, round)) {
                Ok(()) => Some(round),
                Err(Error::Backend { .. }) => {
                    failed += 1;
                    None
                }
                Err(e) => panic!("{name}: {e}"),
            };
            for k in 0..5u32 {
                match (ns.get::<String>(&k), latest[i][k as usize]) {
                    (Ok(got), Some(r)) => {
                        assert_eq!(got, Some(versioned(name, k, r)), "{name}/{k}")
                    }
                    // After a failed write: the old value or the new one (or a miss, if the
                    // write dropped the entry), never another namespace's or key's.
                    (Ok(Some(got)), None) => {
                        assert!(got.starts_with(&format!("{name}/{k}/")), "{got}")
                    }
                    (Ok(None), None) | (Err(Error::Backend { .. }), _) => failed += 1,
                    (Err(e), _) => panic!("{name}/{k}: {e}"),
                }
            }
        }
    }
    assert!(reshard.join().unwrap().success(), "redis-cli reshard");
    eventually("the cluster to settle", || {
        ports.iter().all(|&p| cluster_ok(p))
    });
    let after: Vec<u16> = names.iter().map(|n| node_of(&cache, n, &ports)).collect();
    assert!(
        before.iter().zip(&after).any(|(b, a)| b != a),
        "some namespaces moved: {before:?} -> {after:?}"
    );
    assert!(
        !after.contains(&ports[0]),
        "the first node gave all its slots away"
    );
    // Settled: every namespace is served again, with its latest value.
    for (i, name) in names.iter().enumerate() {
        let ns = cache.namespace(name);
        for k in 0..5u32 {
            let r = latest[i][k as usize].unwrap_or(round);
            ns.set(&k, &versioned(name, k, r)).unwrap();
            assert_eq!(ns.get::<String>(&k).unwrap(), Some(versioned(name, k, r)));
        }
    }
    eprintln!("{round} rounds during the reshard, {failed} typed errors");
}
