//! The peers under test and the raw-disk reference, behind logcache-workload's `Engine`.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use hashbrown::HashMap;
use logcache_workload::{Engine, Key};
use parking_lot::{Mutex, RwLock};
use redb::ReadableDatabase;

/// sled 0.34 with its defaults.
pub struct Sled(sled::Db);

impl Engine for Sled {
    fn open(dir: &Path) -> Self {
        Sled(sled::open(dir).unwrap())
    }
    fn write_batch(&self, items: &[(Key, &[u8])], sync: bool) {
        let mut batch = sled::Batch::default();
        for (k, v) in items {
            batch.insert(&k[..], *v);
        }
        self.0.apply_batch(batch).unwrap();
        if sync {
            self.0.flush().unwrap();
        }
    }
    fn put(&self, key: &Key, value: &[u8]) {
        self.0.insert(key, value).unwrap();
    }
    fn put_durable(&self, key: &Key, value: &[u8]) {
        self.0.insert(key, value).unwrap();
        self.0.flush().unwrap();
    }
    fn get(&self, key: &Key) -> Option<Vec<u8>> {
        self.0.get(key).unwrap().map(|v| v.to_vec())
    }
    fn sync(&self) {
        self.0.flush().unwrap();
    }
}

const TABLE: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("kv");

/// redb 4 with its defaults; a non-durable write is a transaction with `Durability::None`.
pub struct Redb(redb::Database);

impl Engine for Redb {
    fn open(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let db = redb::Database::create(dir.join("db.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(TABLE).unwrap();
        txn.commit().unwrap();
        Redb(db)
    }
    fn write_batch(&self, items: &[(Key, &[u8])], sync: bool) {
        let mut txn = self.0.begin_write().unwrap();
        if !sync {
            txn.set_durability(redb::Durability::None).unwrap();
        }
        {
            let mut table = txn.open_table(TABLE).unwrap();
            for (k, v) in items {
                table.insert(&k[..], *v).unwrap();
            }
        }
        txn.commit().unwrap();
    }
    fn put(&self, key: &Key, value: &[u8]) {
        self.write_batch(&[(*key, value)], false);
    }
    fn put_durable(&self, key: &Key, value: &[u8]) {
        self.write_batch(&[(*key, value)], true);
    }
    fn get(&self, key: &Key) -> Option<Vec<u8>> {
        let txn = self.0.begin_read().unwrap();
        let table = txn.open_table(TABLE).unwrap();
        table.get(&key[..]).unwrap().map(|v| v.value().to_vec())
    }
    fn sync(&self) {
        // An empty durable commit makes the earlier non-durable ones durable.
        self.write_batch(&[], true);
    }
    fn compact(&mut self) -> bool {
        self.0.compact().unwrap();
        true
    }
}

/// fjall 2 with its defaults (one partition; compaction in its own background threads).
pub struct Fjall {
    keyspace: fjall::Keyspace,
    part: fjall::PartitionHandle,
}

impl Engine for Fjall {
    fn open(dir: &Path) -> Self {
        let keyspace = fjall::Config::new(dir).open().unwrap();
        let part = keyspace
            .open_partition("kv", fjall::PartitionCreateOptions::default())
            .unwrap();
        Fjall { keyspace, part }
    }
    fn write_batch(&self, items: &[(Key, &[u8])], sync: bool) {
        let mut batch = self.keyspace.batch();
        for (k, v) in items {
            batch.insert(&self.part, &k[..], *v);
        }
        batch.commit().unwrap();
        if sync {
            self.sync();
        }
    }
    fn put(&self, key: &Key, value: &[u8]) {
        self.part.insert(key, value).unwrap();
    }
    fn put_durable(&self, key: &Key, value: &[u8]) {
        self.part.insert(key, value).unwrap();
        self.sync();
    }
    fn get(&self, key: &Key) -> Option<Vec<u8>> {
        self.part.get(key).unwrap().map(|v| v.to_vec())
    }
    fn sync(&self) {
        self.keyspace.persist(fjall::PersistMode::SyncAll).unwrap();
    }
}

/// The raw-disk reference: writes are appends of `key length, key, value length, value` to
/// a buffered file (no checksum, no index); reads are lookups in a `HashMap` of every value.
/// Opening reads the whole file back into the map. It is what any engine has to beat, not
/// an engine: it keeps every value in memory and cannot serve reads of its own writes
/// without rebuilding the map.
pub struct Raw {
    file: Mutex<BufWriter<File>>,
    map: RwLock<HashMap<Key, Vec<u8>>>,
    path: std::path::PathBuf,
}

impl Raw {
    fn append(out: &mut BufWriter<File>, key: &Key, value: &[u8]) {
        out.write_all(&(key.len() as u32).to_le_bytes()).unwrap();
        out.write_all(key).unwrap();
        out.write_all(&(value.len() as u32).to_le_bytes()).unwrap();
        out.write_all(value).unwrap();
    }

    fn read_all(path: &Path) -> HashMap<Key, Vec<u8>> {
        let mut map = HashMap::new();
        let mut input = BufReader::with_capacity(1 << 20, File::open(path).unwrap());
        let mut len = [0u8; 4];
        while input.read_exact(&mut len).is_ok() {
            let mut key = [0u8; 16];
            input.read_exact(&mut key).unwrap();
            input.read_exact(&mut len).unwrap();
            let mut value = vec![0; u32::from_le_bytes(len) as usize];
            input.read_exact(&mut value).unwrap();
            map.insert(key, value);
        }
        map
    }
}

impl Engine for Raw {
    fn open(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join("log");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        Raw {
            file: Mutex::new(BufWriter::with_capacity(256 << 10, file)),
            map: RwLock::new(Self::read_all(&path)),
            path,
        }
    }
    fn write_batch(&self, items: &[(Key, &[u8])], sync: bool) {
        let mut out = self.file.lock();
        for (k, v) in items {
            Self::append(&mut out, k, v);
        }
        if sync {
            out.flush().unwrap();
            out.get_ref().sync_data().unwrap();
        }
    }
    fn put(&self, key: &Key, value: &[u8]) {
        Self::append(&mut self.file.lock(), key, value);
    }
    fn put_durable(&self, key: &Key, value: &[u8]) {
        self.write_batch(&[(*key, value)], true);
    }
    fn get(&self, key: &Key) -> Option<Vec<u8>> {
        self.map.read().get(key).cloned()
    }
    fn sync(&self) {
        self.write_batch(&[], true);
    }
    fn reindex(&mut self) {
        self.file.lock().flush().unwrap();
        let mut map = self.map.write();
        map.clear();
        *map = Self::read_all(&self.path);
    }
}
