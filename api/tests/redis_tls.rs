//! TLS and authentication to Redis, against a `redis-server` this test starts with a TLS port
//! only, a throwaway certificate authority and server certificate made here with `openssl`,
//! and an ACL user with a password. Needs `redis-server` (built with TLS, as Debian's is) and
//! `openssl`; without them the test says so and skips, except under CI, where it fails.
#![cfg(feature = "tls")]

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
