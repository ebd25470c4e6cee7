//! What a durable write costs the disk: one page per fdatasync, however the page cache holds
//! the segment. A test binary of its own, since `/proc/self/io` counts the whole process.

use logcache_engine::{Durability, Options, Store, WriteBatch};

/// Bytes this process has caused to be written to a block device, if the kernel counts them.
fn written_bytes() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
}

/// With read-ahead on the segment's map, Linux 6.16+ fills ext4's page cache in large folios,
/// and each fdatasync after a 100-byte append wrote the whole folio (16 KiB here after a
/// 100,000-key load, 2 MiB after random reads): 4× fewer durable writes per second.
#[test]
fn a_durable_write_writes_about_one_page() {
    // On the disk: a tmpfs has no block device, and so nothing to measure.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let store = Store::open(dir.path(), Options::default().durability(Durability::None)).unwrap();
    let value = [7u8; 100];
    for start in (0..100_000u32).step_by(1000) {
        let mut batch = WriteBatch::new();
        for i in start..start + 1000 {
            batch.put(&i.to_be_bytes(), &value);
        }
        store.write_batch(&batch).unwrap();
    }
    store.sync().unwrap();
    let Some(before) = written_bytes() else {
        eprintln!("skipped: the kernel does not count written bytes (/proc/self/io)");
        return;
    };
    const PUTS: u64 = 200;
    for i in 0..PUTS as u32 {
        store.put(&(1_000_000 + i).to_be_bytes(), &value).unwrap();
        store.sync().unwrap();
    }
    let per_put = (written_bytes().unwrap() - before) / PUTS;
    if per_put == 0 {
        eprintln!("skipped: the temporary directory is not on a block device");
        return;
    }
    // A page of data, plus now and then a block of file metadata.
    assert!(per_put <= 8192, "{per_put} bytes written per durable put");
    for i in 0..PUTS as u32 {
        assert!(store.contains(&(1_000_000 + i).to_be_bytes()).unwrap());
    }
}
