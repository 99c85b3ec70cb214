//! Small objects of the filesystem store, kept in one SQLite file beside the buckets.
//!
//! Creating a file costs an inode allocation, a directory entry, a rename and (durably) two
//! fsyncs; on some filesystems that is a millisecond or more, far more than a result record
//! or a tiny thumbnail takes to compute. Objects up to the store's inline limit therefore
//! live as rows of `<root>/.pixq-objects.db` (WAL, busy timeout: several processes share it),
//! larger ones as files. A key lives in one place at a time; the store moves it when an
//! overwrite changes its size class. Like inline data in other object stores (MinIO inlines
//! small objects into their metadata), this is invisible through the `ObjectStore` API.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use super::{ObjectMeta, StoreError};

/// File name of the pack inside the store root (not a valid bucket name: buckets never
/// start with a dot).
pub const PACK_FILE: &str = ".pixq-objects.db";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS objects (
    bucket TEXT NOT NULL,
    key TEXT NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (bucket, key)
);
";

/// The pack of one store root. Opened on first use; reads of a store that has no pack yet
/// find nothing and create nothing.
#[derive(Debug)]
pub struct Pack {
    path: PathBuf,
    fsync: bool,
    conn: Mutex<Option<Connection>>,
    /// Reads go through their own connection: in WAL mode they see every committed write
    /// and never wait for a writer's commit (and its fsync) to finish.
    reader: Mutex<Option<Connection>>,
    group: Mutex<Group>,
    /// Write transactions committed (each one fsync when the pack syncs).
    commits: std::sync::atomic::AtomicU64,
}

/// Group commit of small writes: writers queue their object, and whoever gets the connection
/// next commits everything queued in one transaction (one fsync for all of them).
#[derive(Debug, Default)]
struct Group {
    pending: Vec<(u64, String, String, Vec<u8>)>,
    next: u64,
    /// Every ticket up to here is settled (committed, or failed as recorded below).
    settled: u64,
    /// Ticket ranges whose commit failed: (first, last, full disk, message).
    failed: Vec<(u64, u64, bool, String)>,
}

/// Below this much free space, an I/O error of the pack is reported as a full disk: SQLite
/// says `SQLITE_FULL` only for some writes, and a plain I/O error for others (growing the
/// WAL index, for one).
const LOW_SPACE: u64 = 1 << 20;

fn db(op: &'static str, key: &str, e: rusqlite::Error) -> StoreError {
    if let rusqlite::Error::SqliteFailure(f, _) = &e
        && f.code == rusqlite::ErrorCode::DiskFull
    {
        return StoreError::Full { key: key.to_string() };
    }
    StoreError::Io { op, key: key.to_string(), source: std::io::Error::other(e) }
}

/// Free bytes for unprivileged writers on the filesystem holding `dir`.
pub(crate) fn free_bytes(dir: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(dir).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

impl Pack {
    /// The pack under `root`; `fsync` makes every commit durable (`synchronous=FULL`),
    /// otherwise commits survive a process crash but a power loss may drop the last ones.
    pub fn new(root: &Path, fsync: bool) -> Pack {
        Pack {
            path: root.join(PACK_FILE),
            fsync,
            conn: Mutex::new(None),
            reader: Mutex::new(None),
            group: Mutex::new(Group::default()),
            commits: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// `e` as a store error, a full disk when that is what it is.
    fn fail(&self, op: &'static str, key: &str, e: rusqlite::Error) -> StoreError {
        self.full_if_low_space(key, db(op, key, e))
    }

    /// An I/O error on a nearly full filesystem is reported as a full disk.
    fn full_if_low_space(&self, key: &str, e: StoreError) -> StoreError {
        match e {
            StoreError::Io { .. } if self.path.parent().and_then(free_bytes).is_some_and(|f| f < LOW_SPACE) => {
                StoreError::Full { key: key.to_string() }
            }
            e => e,
        }
    }

    /// Write transactions committed so far by this process.
    pub fn commits(&self) -> u64 {
        self.commits.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether the pack file exists (or is open).
    pub fn exists(&self) -> bool {
        self.conn.lock().map(|c| c.is_some()).unwrap_or(true) || self.path.exists()
    }

    /// Runs a read on the connection; `Ok(None)` when there is no pack yet.
    fn read<T>(&self, key: &str, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<Option<T>, StoreError> {
        let mut slot = self.reader.lock().map_err(|_| StoreError::Transient("object pack lock poisoned".into()))?;
        if slot.is_none() && !self.path.exists() {
            return Ok(None);
        }
        self.open(&mut slot, key)?;
        let conn = slot.as_ref().expect("opened above");
        f(conn).map(Some).map_err(|e| self.fail("object pack", key, e))
    }

    fn open(&self, slot: &mut Option<Connection>, key: &str) -> Result<(), StoreError> {
        if slot.is_none() {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| StoreError::Io {
                    op: "mkdir for",
                    key: key.into(),
                    source: e,
                })?;
            }
            // A new pack comes whole, with two fsyncs instead of SQLite's six (`sqlite_file`).
            crate::sqlite_file::create_if_missing(&self.path, SCHEMA).map_err(|e| StoreError::Io {
                op: "create the object pack for",
                key: key.into(),
                source: e,
            })?;
            let open = || -> rusqlite::Result<Connection> {
                let c = Connection::open(&self.path)?;
                c.busy_timeout(Duration::from_secs(10))?;
                c.set_db_config(
                    rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
                    crate::queue::sqlite::NO_CHECKPOINT_ON_CLOSE,
                )?;
                c.pragma_update(None, "journal_mode", "WAL")?;
                c.pragma_update(None, "synchronous", if self.fsync { "FULL" } else { "NORMAL" })?;
                c.execute_batch(SCHEMA)?;
                Ok(c)
            };
            *slot = Some(open().map_err(|e| self.fail("open the object pack for", key, e))?);
        }
        Ok(())
    }

    /// Opens the writer's connection now, creating the pack if there is none, instead of
    /// at the first write: a command that will write (`pixq process` on a fresh home) makes
    /// it beside the queue file, their fsyncs overlapping, rather than in the path of its
    /// first upload.
    pub fn create(&self) -> Result<(), StoreError> {
        let mut slot = self.conn.lock().map_err(|_| StoreError::Transient("object pack lock poisoned".into()))?;
        self.open(&mut slot, PACK_FILE)
    }

    /// Runs `f` inside one `BEGIN IMMEDIATE` transaction: the pack's write lock is also the
    /// lock under which the store renames or removes a key's file, so writers of one key in
    /// several processes serialise and the last one wins whichever size class it wrote.
    pub fn write<T>(&self, key: &str, f: impl FnOnce(&Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut slot = self.conn.lock().map_err(|_| StoreError::Transient("object pack lock poisoned".into()))?;
        self.open(&mut slot, key)?;
        let conn = slot.as_mut().expect("opened above");
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| self.fail("lock the object pack for", key, e))?;
        let out = f(&tx).map_err(|e| self.full_if_low_space(key, e))?;
        tx.commit().map_err(|e| self.fail("commit the object pack for", key, e))?;
        self.commits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(out)
    }

    /// Writes (or overwrites) a small object, durably when the pack syncs, in one transaction
    /// with whatever other writers queued meanwhile (group commit).
    pub fn put(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<(), StoreError> {
        self.put_all(bucket, vec![(key.to_string(), body)])
    }

    /// Writes (or overwrites) small objects of one bucket, all in the same transaction (and
    /// with whatever other writers queued meanwhile): a reader sees all of them or none.
    pub fn put_all(&self, bucket: &str, objects: Vec<(String, Vec<u8>)>) -> Result<(), StoreError> {
        let poisoned = || StoreError::Transient("object pack lock poisoned".into());
        let Some(key) = objects.first().map(|o| o.0.clone()) else { return Ok(()) };
        let key = key.as_str();
        // Consecutive tickets under one lock: whoever commits takes them all at once.
        let (first, ticket) = {
            let mut g = self.group.lock().map_err(|_| poisoned())?;
            let first = g.next + 1;
            for (k, body) in objects {
                g.next += 1;
                let t = g.next;
                g.pending.push((t, bucket.to_string(), k, body));
            }
            (first, g.next)
        };
        let mut slot = self.conn.lock().map_err(|_| poisoned())?;
        let batch = {
            let mut g = self.group.lock().map_err(|_| poisoned())?;
            if g.settled >= ticket {
                // A writer before us committed our objects with its own.
                return match g.failed.iter().find(|f| f.0 <= ticket && first <= f.1) {
                    None => Ok(()),
                    Some((_, _, true, _)) => Err(StoreError::Full { key: key.to_string() }),
                    Some((_, _, false, msg)) => Err(StoreError::Io {
                        op: "write to the object pack",
                        key: key.to_string(),
                        source: std::io::Error::other(msg.clone()),
                    }),
                };
            }
            std::mem::take(&mut g.pending)
        };
        let last = batch.last().map(|b| b.0).unwrap_or(ticket);
        let result = self.open(&mut slot, key).and_then(|()| {
            let conn = slot.as_mut().expect("opened above");
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(|e| self.fail("lock the object pack for", key, e))?;
            for (_, b, k, body) in &batch {
                Pack::upsert(&tx, b, k, body)?;
            }
            tx.commit().map_err(|e| self.fail("commit the object pack for", key, e))?;
            self.commits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        });
        let mut g = self.group.lock().map_err(|_| poisoned())?;
        g.settled = g.settled.max(last);
        // Failures are kept until every writer of a much later ticket is gone.
        g.failed.retain(|f| f.1 + (1 << 20) > last);
        if let Err(e) = &result {
            g.failed.push((
                batch.first().map(|b| b.0).unwrap_or(ticket),
                last,
                matches!(e, StoreError::Full { .. }),
                e.to_string(),
            ));
        }
        result
    }

    /// Writes (or overwrites) a small object; call inside [`Pack::write`].
    pub fn upsert(c: &Connection, bucket: &str, key: &str, body: &[u8]) -> Result<(), StoreError> {
        c.prepare_cached(
            "INSERT INTO objects (bucket, key, body) VALUES (?1, ?2, ?3)
             ON CONFLICT (bucket, key) DO UPDATE SET body = excluded.body",
        )
        .and_then(|mut st| st.execute(params![bucket, key, body]))
        .map_err(|e| db("write to the object pack", key, e))?;
        Ok(())
    }

    /// Whether the pack holds the key; call inside [`Pack::write`].
    pub fn contains(c: &Connection, bucket: &str, key: &str) -> Result<bool, StoreError> {
        c.prepare_cached("SELECT 1 FROM objects WHERE bucket = ?1 AND key = ?2")
            .and_then(|mut st| st.query_row(params![bucket, key], |_| Ok(())).optional())
            .map(|r| r.is_some())
            .map_err(|e| db("read the object pack", key, e))
    }

    /// Removes an object from the pack (if there); call inside [`Pack::write`].
    pub fn remove(c: &Connection, bucket: &str, key: &str) -> Result<(), StoreError> {
        c.prepare_cached("DELETE FROM objects WHERE bucket = ?1 AND key = ?2")
            .and_then(|mut st| st.execute(params![bucket, key]))
            .map_err(|e| db("delete from the object pack", key, e))?;
        Ok(())
    }

    /// The object's bytes, if it is in the pack.
    pub fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .read(key, |c| {
                c.prepare_cached("SELECT body FROM objects WHERE bucket = ?1 AND key = ?2")?
                    .query_row(params![bucket, key], |r| r.get::<_, Vec<u8>>(0))
                    .optional()
            })?
            .flatten())
    }

    /// The object's size, if it is in the pack.
    pub fn size(&self, bucket: &str, key: &str) -> Result<Option<u64>, StoreError> {
        Ok(self
            .read(key, |c| {
                c.prepare_cached("SELECT length(body) FROM objects WHERE bucket = ?1 AND key = ?2")?
                    .query_row(params![bucket, key], |r| r.get::<_, i64>(0))
                    .optional()
            })?
            .flatten()
            .map(|n| n.max(0) as u64))
    }

    /// Objects of `bucket` whose key starts with `prefix`, in key order.
    pub fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        Ok(self
            .read(prefix, |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT key, length(body) FROM objects WHERE bucket = ?1 AND key >= ?2 ORDER BY key",
                )?;
                let mut rows = stmt.query(params![bucket, prefix])?;
                let mut out = Vec::new();
                while let Some(r) = rows.next()? {
                    let key: String = r.get(0)?;
                    // Keys sort by bytes, so the first key past the prefix ends the range.
                    if !key.starts_with(prefix) {
                        break;
                    }
                    out.push(ObjectMeta { key, size: r.get::<_, i64>(1)?.max(0) as u64, etag: None });
                }
                Ok(out)
            })?
            .unwrap_or_default())
    }
}
