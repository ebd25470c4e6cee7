//! TLS and authentication to Redis, against a `redis-server` this test starts with a TLS port
//! only, a throwaway certificate authority and server certificate made here with `openssl`,
//! and an ACL user with a password. Needs `redis-server` (built with TLS, as Debian's is) and
//! `openssl`; without them the test says so and skips, except under CI, where it fails.
#![cfg(feature = "tls")]

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use logcache::memo::{self, MemoSpec};
use logcache::{CacheBuilder, Error, RedisBackend};

fn skip(why: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{why} (CI=true)"
    );
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
}

fn run(dir: &Path, args: &[&str]) -> bool {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A CA (`ca.crt`) and a server certificate for 127.0.0.1 signed by it.
fn make_certificates(dir: &Path) -> bool {
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    run(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "1",
            "-subj",
            "/CN=logcache test CA",
        ],
    ) && run(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    ) && run(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "1",
            "-extfile",
            "ext.cnf",
        ],
    )
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn tls_with_a_user_and_password_in_the_url() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    if !make_certificates(d) {
        return skip("openssl is not installed: TLS to Redis is NOT tested");
    }
    std::fs::write(
        d.join("users.acl"),
        "user alice on >wonderland ~* &* +@all\nuser default off\n",
    )
    .unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .args([
            "--tls-cert-file",
            "server.crt",
            "--tls-key-file",
            "server.key",
        ])
        .args(["--tls-ca-cert-file", "ca.crt", "--tls-auth-clients", "no"])
        .args(["--aclfile", d.join("users.acl").to_str().unwrap()])
        .args(["--save", "", "--appendonly", "no"])
        .current_dir(d)
        .stdout(Stdio::null())
        .spawn();
    let Ok(child) = child else {
        return skip("redis-server is not installed: TLS to Redis is NOT tested");
    };
    let _server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return skip("redis-server did not open a TLS port (built without TLS?)");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let ca = std::fs::read(d.join("ca.crt")).unwrap();
    let url = format!("rediss://alice:wonderland@127.0.0.1:{port}/0");
    let cache = CacheBuilder::new()
        .backend(RedisBackend::open_tls(&url, &ca).unwrap())
        .build()
        .unwrap();
    cache
        .set("greeting", &"hello over TLS".to_string())
        .unwrap();
    assert_eq!(
        cache.get::<String>("greeting").unwrap().as_deref(),
        Some("hello over TLS")
    );
    let spec = MemoSpec::new("redis_tls::square");
    assert_eq!(memo::memoize(&cache, &spec, &(9u32,), || 81u32), 81);
    let again: u32 = memo::memoize(&cache, &spec, &(9u32,), || unreachable!());
    assert_eq!(again, 81);

    let fails = |backend: RedisBackend| {
        let cache = CacheBuilder::new()
            .backend(backend.with_timeout(Duration::from_secs(2)))
            .build()
            .unwrap();
        matches!(cache.get::<String>("greeting"), Err(Error::Backend { .. }))
    };
    let wrong_password = format!("rediss://alice:rabbit@127.0.0.1:{port}/0");
    assert!(fails(RedisBackend::open_tls(&wrong_password, &ca).unwrap()));
    // The server's certificate is signed by no authority the system trusts.
    assert!(fails(RedisBackend::open(&url).unwrap()));
    // Plain text to a TLS port.
    let plain = format!("redis://alice:wonderland@127.0.0.1:{port}/0");
    assert!(fails(RedisBackend::open(&plain).unwrap()));
}

#[test]
fn a_cluster_over_tls_with_a_user_and_password() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    if !make_certificates(d) {
        return skip("openssl is not installed: TLS to a Redis Cluster is NOT tested");
    }
    std::fs::write(
        d.join("users.acl"),
        "user alice on >wonderland ~* &* +@all\nuser default on nopass ~* &* +@all\n",
    )
    .unwrap();
    let ports: Vec<u16> = (0..3).map(|_| common::free_cluster_port()).collect();
    let mut nodes = Vec::new();
    for port in &ports {
        let node_dir = d.join(port.to_string());
        std::fs::create_dir(&node_dir).unwrap();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--tls-cluster", "yes"])
            .args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ])
            .args(["--tls-cert-file", d.join("server.crt").to_str().unwrap()])
            .args(["--tls-key-file", d.join("server.key").to_str().unwrap()])
            .args(["--tls-ca-cert-file", d.join("ca.crt").to_str().unwrap()])
            .args(["--tls-auth-clients", "no"])
            .args(["--aclfile", d.join("users.acl").to_str().unwrap()])
            .args(["--save", "", "--appendonly", "no"])
            .current_dir(&node_dir)
            .stdout(Stdio::null())
            .spawn();
        let Ok(child) = child else {
            return skip("redis-server is not installed: TLS to a Redis Cluster is NOT tested");
        };
        nodes.push(Server(child));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while ports
        .iter()
        .any(|&p| std::net::TcpStream::connect(("127.0.0.1", p)).is_err())
    {
        if Instant::now() > deadline {
            return skip("redis-server did not open a TLS port (built without TLS?)");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let cli = |args: &[&str]| {
        Command::new("redis-cli")
            .args(["--tls", "--cacert", d.join("ca.crt").to_str().unwrap()])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .output()
    };
    let addresses: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut create = vec!["--cluster", "create"];
    create.extend(addresses.iter().map(String::as_str));
    create.extend(["--cluster-replicas", "0", "--cluster-yes"]);
    match cli(&create) {
        Ok(out) if out.status.success() => {}
        Ok(_) => panic!("redis-cli could not create a TLS cluster"),
        Err(_) => return skip("redis-cli is not installed: TLS to a Redis Cluster is NOT tested"),
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ports.iter().all(|p| {
        cli(&["-p", &p.to_string(), "cluster", "info"])
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok"))
    }) {
        assert!(Instant::now() < deadline, "the TLS cluster did not form");
        std::thread::sleep(Duration::from_millis(50));
    }

    let ca = std::fs::read(d.join("ca.crt")).unwrap();
    let urls: Vec<String> = ports
        .iter()
        .map(|p| format!("rediss://alice:wonderland@127.0.0.1:{p}"))
        .collect();
    let cache = CacheBuilder::new()
        .backend(RedisBackend::cluster_tls(&urls, &ca).unwrap())
        .build()
        .unwrap();
    // Namespaces spread over the three nodes: each one's entries are found over TLS.
    for i in 0..12u32 {
        let ns = cache.namespace(&format!("tls{i}"));
        ns.set(&i, &format!("value {i}")).unwrap();
        assert_eq!(
            ns.get::<String>(&i).unwrap().as_deref(),
            Some(format!("value {i}").as_str())
        );
    }
    let spec = MemoSpec::new("redis_tls::cluster_square");
    assert_eq!(memo::memoize(&cache, &spec, &(7u32,), || 49u32), 49);
    let again: u32 = memo::memoize(&cache, &spec, &(7u32,), || unreachable!());
    assert_eq!(again, 49);

    let fails = |backend: RedisBackend| {
        let cache = CacheBuilder::new()
            .backend(backend.with_timeout(Duration::from_secs(2)))
            .build()
            .unwrap();
        matches!(
            cache.namespace("tls0").get::<String>(&0u32),
            Err(Error::Backend { .. })
        )
    };
    let wrong: Vec<String> = ports
        .iter()
        .map(|p| format!("rediss://alice:rabbit@127.0.0.1:{p}"))
        .collect();
    assert!(fails(RedisBackend::cluster_tls(&wrong, &ca).unwrap()));
    // The nodes' certificate is signed by no authority the system trusts.
    assert!(fails(RedisBackend::cluster(&urls).unwrap()));
}
