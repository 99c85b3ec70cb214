//! The embedded queue: SQS semantics over one SQLite file (bundled SQLite, WAL, busy
//! timeout), safe for several processes at once.
//!
//! Every state change is one `BEGIN IMMEDIATE` transaction, so two processes never hand out
//! the same visible message. Durability: WAL with `synchronous=NORMAL` (a commit survives any
//! process crash); a send also syncs the log before it returns (a sent message survives a
//! power loss; see `sync_log`), while receives, deletes and visibility changes do not (a
//! power loss may undo the last of those, which only redelivers messages).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::config::DbConfig;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Counts, DeadLetter, MAX_BODY_BYTES, Message, Queue, QueueError, SendOptions};
use crate::clock::{Clock, SystemClock};

pub use super::QueueConfig;

/// A queue in a SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteQueue {
    /// Set once the file is open; a queue opened in the background (`open_in_background`)
    /// has its operations wait here, off the async threads, until it is.
    conn: Arc<OnceLock<Result<Mutex<Connection>, String>>>,
    cfg: Arc<QueueConfig>,
    clock: Arc<dyn Clock>,
    /// Wakes long polls in this process as soon as this process sends.
    sent: Arc<Notify>,
    /// The file's write-ahead log, which a send syncs (`sync_log`).
    log: Arc<PathBuf>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    id TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL,
    group_id TEXT,
    sent_at INTEGER NOT NULL,
    visible_at INTEGER NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    receipt TEXT,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS messages_ready ON messages(queue, visible_at, seq);
CREATE INDEX IF NOT EXISTS messages_group ON messages(queue, group_id, seq);
CREATE UNIQUE INDEX IF NOT EXISTS messages_receipt ON messages(receipt);
CREATE TABLE IF NOT EXISTS dedup (
    queue TEXT NOT NULL,
    dedup_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (queue, dedup_id)
);
CREATE TABLE IF NOT EXISTS queues (
    name TEXT PRIMARY KEY,
    fifo INTEGER NOT NULL,
    max_receives INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS dead (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    id TEXT NOT NULL,
    body TEXT NOT NULL,
    group_id TEXT,
    sent_at INTEGER NOT NULL,
    receive_count INTEGER NOT NULL,
    reason TEXT NOT NULL,
    died_at INTEGER NOT NULL
);
";

/// Receive on a standard queue: earliest visible first (sent order among equals), a walk of
/// the (queue, visible_at, seq) index that stops after the batch is full, however deep the
/// queue (ordering by seq alone sorted every visible message on each receive).
const RECEIVE_STANDARD: &str = "SELECT seq, id, body, group_id, sent_at, receive_count, last_error FROM messages
     WHERE queue = ?1 AND visible_at <= ?2 ORDER BY visible_at, seq LIMIT ?3";

/// The write-ahead log of the database at `path`.
fn log_of(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push("-wal");
    PathBuf::from(p)
}

/// Receive on a FIFO queue: a message is eligible only when no earlier message of its group
/// is hidden (in flight or delayed), so groups are handed out in order. `NOT INDEXED` walks
/// the table in `seq` (rowid) order and stops once the batch is full, instead of collecting
/// every visible message through the ready index and sorting them.
const RECEIVE_FIFO: &str =
    "SELECT seq, id, body, group_id, sent_at, receive_count, last_error FROM messages m NOT INDEXED
     WHERE queue = ?1 AND visible_at <= ?2 AND NOT EXISTS (
         SELECT 1 FROM messages o WHERE o.queue = m.queue AND o.group_id = m.group_id
         AND o.seq < m.seq AND o.visible_at > ?2)
     ORDER BY seq LIMIT ?3";

/// Whether closing a connection skips SQLite's checkpoint (copying the write-ahead log into
/// the database file, and two fsyncs): a command would otherwise pay for it as it exits,
/// after its work is done. The log stays, every commit in it as durable as before, and the
/// next writer's automatic checkpoint (every 1,000 pages of log) copies it, in a later run
/// and beside that run's work. Used by the queue and the store's object pack.
pub(crate) const NO_CHECKPOINT_ON_CLOSE: bool = true;

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}

fn make_parent(path: &Path) -> Result<(), QueueError> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => std::fs::create_dir_all(dir)
            .map_err(|e| QueueError::Permanent(format!("cannot create {}: {e}", dir.display()))),
        None => Ok(()),
    }
}

/// The open connection, and `cfg` with the settings the file holds.
fn connect(path: &Path, cfg: QueueConfig, clock: &dyn Clock) -> Result<(Connection, QueueConfig), QueueError> {
    // A new file comes whole, with two fsyncs instead of SQLite's six (`sqlite_file`).
    crate::sqlite_file::create_if_missing(path, SCHEMA)
        .map_err(|e| QueueError::Permanent(format!("cannot create {}: {e}", path.display())))?;
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // The last connection to close leaves the log as it is (see `NO_CHECKPOINT_ON_CLOSE`).
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, NO_CHECKPOINT_ON_CLOSE)?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.execute_batch(SCHEMA)?;
    // Like SQS queue attributes: the first opener fixes FIFO and max receives, every
    // later opener (another worker, another CLI) uses the stored values. On a new file this
    // is the first write to its log, which syncs the log's header and the folder: done
    // here, while the file is opened (in the background, on a fresh home), and not by the
    // first send.
    let mut cfg = cfg;
    conn.execute(
        "INSERT OR IGNORE INTO queues (name, fifo, max_receives, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![cfg.name, cfg.fifo, cfg.max_receives, clock.now_ms()],
    )?;
    (cfg.fifo, cfg.max_receives) =
        conn.query_row("SELECT fifo, max_receives FROM queues WHERE name = ?1", params![cfg.name], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    Ok((conn, cfg))
}

impl SqliteQueue {
    /// Opens (creating if needed) the queue file with the system clock.
    pub fn open(path: &Path, cfg: QueueConfig) -> Result<SqliteQueue, QueueError> {
        SqliteQueue::open_with_clock(path, cfg, Arc::new(SystemClock))
    }

    /// Opens with an explicit clock (tests move a `ManualClock`).
    pub fn open_with_clock(path: &Path, cfg: QueueConfig, clock: Arc<dyn Clock>) -> Result<SqliteQueue, QueueError> {
        make_parent(path)?;
        let (conn, cfg) = connect(path, cfg, clock.as_ref())?;
        Ok(SqliteQueue::with(path, Arc::new(OnceLock::from(Ok(Mutex::new(conn)))), cfg, clock))
    }

    /// Opens the queue file, creating it if needed; a file that is not there yet is made
    /// on a thread of its own while the caller goes on (a fresh home's queue costs two
    /// fsyncs, in the path of nothing a command does before its first send). Every
    /// operation waits for the file; one that could not be made fails them all with its
    /// error. A new file takes `cfg` as it is, so it is known at once.
    pub fn open_in_background(path: &Path, cfg: QueueConfig) -> Result<SqliteQueue, QueueError> {
        if std::fs::symlink_metadata(path).is_ok() {
            return SqliteQueue::open(path, cfg);
        }
        make_parent(path)?;
        let slot = Arc::new(OnceLock::new());
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let q = SqliteQueue::with(path, slot.clone(), cfg.clone(), clock.clone());
        let (file, wanted) = (path.to_path_buf(), cfg);
        let opening = std::thread::Builder::new().name("pixq-queue".into()).spawn(move || {
            // A panic would leave every operation waiting: it is an error like any other.
            let connected = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                connect(&file, wanted.clone(), clock.as_ref()).map_err(|e| e.to_string())
            }))
            .unwrap_or_else(|_| Err(format!("opening {} panicked", file.display())));
            let opened = connected.and_then(|(c, got)| {
                // Another process made the file in the same moment, with other settings.
                if (got.fifo, got.max_receives) != (wanted.fifo, wanted.max_receives) {
                    return Err(format!(
                        "{} was created at the same moment by another process, as a {} queue with {} receives at most; run the command again",
                        file.display(),
                        if got.fifo { "FIFO" } else { "standard" },
                        got.max_receives
                    ));
                }
                Ok(c)
            });
            let _ = slot.set(opened.map(Mutex::new));
        });
        match opening {
            Ok(_) => Ok(q),
            // No thread to spare: open it here.
            Err(_) => SqliteQueue::open(path, q.cfg.as_ref().clone()),
        }
    }

    fn with(
        path: &Path,
        conn: Arc<OnceLock<Result<Mutex<Connection>, String>>>,
        cfg: QueueConfig,
        clock: Arc<dyn Clock>,
    ) -> SqliteQueue {
        SqliteQueue { conn, cfg: Arc::new(cfg), clock, sent: Arc::new(Notify::new()), log: Arc::new(log_of(path)) }
    }

    /// Makes every commit so far durable: the write-ahead log synced to the disk, as a
    /// commit with `synchronous=FULL` would, but outside the connection's lock.
    ///
    /// A send commits with `NORMAL` (written and visible to every reader, not yet synced),
    /// wakes this process's receivers and then syncs here before it returns. The caller
    /// still sees a send return only once it would survive a power loss; a worker in the
    /// same process starts on the message while the disk syncs instead of after. A receive
    /// that runs meanwhile is itself a later commit in the same log: a power loss before
    /// the sync takes the send and the receive together.
    async fn sync_log(&self) -> Result<(), QueueError> {
        let log = self.log.clone();
        tokio::task::spawn_blocking(move || match std::fs::File::open(log.as_path()) {
            Ok(f) => f.sync_all(),
            // No log: a checkpoint by another process copied it into the database file,
            // synced, and removed it.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        })
        .await
        .map_err(|e| QueueError::Transient(format!("queue task failed: {e}")))?
        .map_err(|e| QueueError::Transient(format!("syncing the queue's log {}: {e}", self.log.display())))
    }

    /// This queue's settings.
    pub fn config(&self) -> &QueueConfig {
        &self.cfg
    }

    async fn with_conn<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection, &QueueConfig, i64) -> Result<T, QueueError> + Send + 'static,
    ) -> Result<T, QueueError> {
        let conn = self.conn.clone();
        let cfg = self.cfg.clone();
        let clock = self.clock.clone();
        tokio::task::spawn_blocking(move || {
            let conn = conn.wait().as_ref().map_err(|e| QueueError::Permanent(format!("opening the queue: {e}")))?;
            let mut c = conn.lock().map_err(|_| QueueError::Permanent("queue connection poisoned".into()))?;
            let now = clock.now_ms();
            f(&mut c, &cfg, now)
        })
        .await
        .map_err(|e| QueueError::Transient(format!("queue task failed: {e}")))?
    }

    fn send_in(
        tx: &rusqlite::Transaction<'_>,
        cfg: &QueueConfig,
        now: i64,
        body: &str,
        o: &SendOptions,
    ) -> Result<String, QueueError> {
        if body.is_empty() || body.len() > MAX_BODY_BYTES {
            return Err(QueueError::Refused(format!("body is {} bytes (allowed 1..={MAX_BODY_BYTES})", body.len())));
        }
        if cfg.fifo && o.group_id.is_none() {
            return Err(QueueError::Refused("a FIFO queue needs a message group id".into()));
        }
        if let (true, Some(d)) = (cfg.fifo, o.dedup_id.as_deref()) {
            tx.execute("DELETE FROM dedup WHERE queue = ?1 AND expires_at <= ?2", params![cfg.name, now])?;
            let existing: Option<String> = tx
                .query_row(
                    "SELECT message_id FROM dedup WHERE queue = ?1 AND dedup_id = ?2",
                    params![cfg.name, d],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(id) = existing {
                return Ok(id);
            }
        }
        let id = crate::ids::random_hex(2);
        tx.execute(
            "INSERT INTO messages (queue, id, body, group_id, sent_at, visible_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![cfg.name, id, body, o.group_id, now, now + ms(o.delay)],
        )?;
        if let (true, Some(d)) = (cfg.fifo, o.dedup_id.as_deref()) {
            tx.execute(
                "INSERT INTO dedup (queue, dedup_id, message_id, expires_at) VALUES (?1, ?2, ?3, ?4)",
                params![cfg.name, d, id, now + ms(cfg.dedup_window)],
            )?;
        }
        Ok(id)
    }

    fn receive_now(
        c: &mut Connection,
        cfg: &QueueConfig,
        now: i64,
        max: usize,
        vis: i64,
    ) -> Result<Vec<Message>, QueueError> {
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut out = Vec::new();
        loop {
            let want = max - out.len();
            // FIFO: a message is eligible only when no earlier message of its group is hidden
            // (in flight or delayed), so groups are handed out in order.
            let sql = if cfg.fifo { RECEIVE_FIFO } else { RECEIVE_STANDARD };
            type Row = (i64, String, String, Option<String>, i64, u32, Option<String>);
            let rows: Vec<Row> = {
                let mut st = tx.prepare_cached(sql)?;
                st.query_map(params![cfg.name, now, want as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
                })?
                .collect::<Result<_, _>>()?
            };
            if rows.is_empty() {
                break;
            }
            let mut died = 0;
            for (seq, id, body, group_id, sent_at, count, last_error) in rows {
                if count >= cfg.max_receives {
                    let reason = format!(
                        "received {count} times without being acknowledged (max {}); last failure: {}",
                        cfg.max_receives,
                        last_error.as_deref().unwrap_or("none recorded: the worker crashed or timed out")
                    );
                    Self::bury(&tx, cfg, now, seq, &reason)?;
                    died += 1;
                    continue;
                }
                let receipt = format!("{id}.{}", crate::ids::random_hex(1));
                tx.execute(
                    "UPDATE messages SET receive_count = receive_count + 1, visible_at = ?1, receipt = ?2 WHERE seq = ?3",
                    params![now + vis, receipt, seq],
                )?;
                out.push(Message { id, receipt, body, receive_count: count + 1, sent_at_ms: sent_at, group_id });
            }
            // Only look again when dead-lettering left room in the batch.
            if died == 0 || out.len() >= max {
                break;
            }
        }
        tx.commit()?;
        Ok(out)
    }

    fn bury(
        tx: &rusqlite::Transaction<'_>,
        cfg: &QueueConfig,
        now: i64,
        seq: i64,
        reason: &str,
    ) -> Result<(), QueueError> {
        tx.execute(
            "INSERT INTO dead (queue, id, body, group_id, sent_at, receive_count, reason, died_at)
             SELECT queue, id, body, group_id, sent_at, receive_count, ?1, ?2 FROM messages WHERE seq = ?3",
            params![reason, now, seq],
        )?;
        tx.execute("DELETE FROM messages WHERE seq = ?1", params![seq])?;
        let _ = cfg;
        Ok(())
    }
}

#[async_trait]
impl Queue for SqliteQueue {
    async fn send(&self, body: &str, opts: &SendOptions) -> Result<String, QueueError> {
        let (body, opts) = (body.to_string(), opts.clone());
        let id = self
            .with_conn(move |c, cfg, now| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let id = Self::send_in(&tx, cfg, now, &body, &opts)?;
                tx.commit()?;
                Ok(id)
            })
            .await?;
        self.sent.notify_waiters();
        self.sync_log().await?;
        Ok(id)
    }

    async fn send_batch(&self, entries: &[(String, SendOptions)]) -> Result<Vec<String>, QueueError> {
        let entries = entries.to_vec();
        let ids = self
            .with_conn(move |c, cfg, now| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let ids =
                    entries.iter().map(|(b, o)| Self::send_in(&tx, cfg, now, b, o)).collect::<Result<Vec<_>, _>>()?;
                tx.commit()?;
                Ok(ids)
            })
            .await?;
        self.sent.notify_waiters();
        self.sync_log().await?;
        Ok(ids)
    }

    async fn receive(&self, max: usize, visibility: Duration, wait: Duration) -> Result<Vec<Message>, QueueError> {
        self.receive_until(max, visibility, wait, &CancellationToken::new()).await
    }

    async fn receive_until(
        &self,
        max: usize,
        visibility: Duration,
        wait: Duration,
        stop: &CancellationToken,
    ) -> Result<Vec<Message>, QueueError> {
        let max = max.clamp(1, 10);
        let vis = ms(visibility);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Register for a wake-up before looking, so a send between the look and the wait
            // is not missed.
            let notified = self.sent.notified();
            let got = self.with_conn(move |c, cfg, now| Self::receive_now(c, cfg, now, max, vis)).await?;
            let now = tokio::time::Instant::now();
            if !got.is_empty() || now >= deadline || stop.is_cancelled() {
                return Ok(got);
            }
            let nap = self.cfg.poll_interval.min(deadline - now);
            // Only the wait is cut short: a look that has begun runs to its end above.
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(nap) => {}
                _ = stop.cancelled() => return Ok(Vec::new()),
            }
        }
    }

    async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        let receipt = receipt.to_string();
        self.with_conn(move |c, _, _| {
            // Deleting with a stale receipt succeeds without effect, as on SQS.
            c.execute("DELETE FROM messages WHERE receipt = ?1", params![receipt])?;
            Ok(())
        })
        .await
    }

    async fn delete_batch(&self, receipts: &[String]) -> Result<(), QueueError> {
        let receipts = receipts.to_vec();
        self.with_conn(move |c, _, _| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut st = tx.prepare_cached("DELETE FROM messages WHERE receipt = ?1")?;
                for r in &receipts {
                    st.execute(params![r])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn change_visibility(&self, receipt: &str, timeout: Duration) -> Result<(), QueueError> {
        let receipt = receipt.to_string();
        self.with_conn(move |c, _, now| {
            let n = c.execute(
                "UPDATE messages SET visible_at = ?1 WHERE receipt = ?2",
                params![now + ms(timeout), receipt],
            )?;
            if n == 0 { Err(QueueError::ReceiptExpired) } else { Ok(()) }
        })
        .await
    }

    async fn retry_later(&self, receipt: &str, delay: Duration, reason: &str) -> Result<(), QueueError> {
        let (receipt, reason) = (receipt.to_string(), reason.to_string());
        self.with_conn(move |c, _, now| {
            let n = c.execute(
                "UPDATE messages SET visible_at = ?1, last_error = ?2 WHERE receipt = ?3",
                params![now + ms(delay), reason, receipt],
            )?;
            if n == 0 { Err(QueueError::ReceiptExpired) } else { Ok(()) }
        })
        .await
    }

    async fn dead_letter(&self, msg: &Message, reason: &str) -> Result<(), QueueError> {
        let (receipt, reason) = (msg.receipt.clone(), reason.to_string());
        self.with_conn(move |c, cfg, now| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let seq: Option<i64> = tx
                .query_row("SELECT seq FROM messages WHERE receipt = ?1", params![receipt], |r| r.get(0))
                .optional()?;
            let Some(seq) = seq else { return Err(QueueError::ReceiptExpired) };
            Self::bury(&tx, cfg, now, seq, &reason)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn counts(&self) -> Result<Counts, QueueError> {
        self.with_conn(|c, cfg, now| {
            let (visible, in_flight, delayed): (i64, i64, i64) = c.query_row(
                "SELECT
                   COALESCE(SUM(visible_at <= ?2), 0),
                   COALESCE(SUM(visible_at > ?2 AND receive_count > 0), 0),
                   COALESCE(SUM(visible_at > ?2 AND receive_count = 0), 0)
                 FROM messages WHERE queue = ?1",
                params![cfg.name, now],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            let dead: i64 =
                c.query_row("SELECT COUNT(*) FROM dead WHERE queue = ?1", params![cfg.name], |r| r.get(0))?;
            Ok(Counts {
                visible: visible as u64,
                in_flight: in_flight as u64,
                delayed: delayed as u64,
                dead: dead as u64,
            })
        })
        .await
    }

    async fn dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>, QueueError> {
        self.with_conn(move |c, cfg, _| {
            let mut st = c.prepare_cached(
                "SELECT id, body, reason, receive_count, died_at FROM dead WHERE queue = ?1 ORDER BY seq LIMIT ?2",
            )?;
            let rows = st
                .query_map(params![cfg.name, max as i64], |r| {
                    Ok(DeadLetter {
                        id: r.get(0)?,
                        body: r.get(1)?,
                        reason: r.get(2)?,
                        receive_count: r.get(3)?,
                        died_at_ms: r.get(4)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn redrive(&self, max: usize) -> Result<usize, QueueError> {
        let n = self
            .with_conn(move |c, cfg, now| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let seqs: Vec<i64> = {
                    let mut st = tx.prepare("SELECT seq FROM dead WHERE queue = ?1 ORDER BY seq LIMIT ?2")?;
                    st.query_map(params![cfg.name, max as i64], |r| r.get(0))?.collect::<Result<_, _>>()?
                };
                for seq in &seqs {
                    tx.execute(
                        "INSERT INTO messages (queue, id, body, group_id, sent_at, visible_at)
                         SELECT queue, id, body, group_id, sent_at, ?1 FROM dead WHERE seq = ?2",
                        params![now, seq],
                    )?;
                    tx.execute("DELETE FROM dead WHERE seq = ?1", params![seq])?;
                }
                tx.commit()?;
                Ok(seqs.len())
            })
            .await?;
        self.sent.notify_waiters();
        Ok(n)
    }

    fn max_send_batch(&self) -> usize {
        1000
    }

    fn max_receives(&self) -> u32 {
        self.cfg.max_receives
    }

    fn is_fifo(&self) -> bool {
        self.cfg.fifo
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(sql: &str) -> String {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(SCHEMA).unwrap();
        let plan: Vec<String> = c
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap()
            .query_map(params!["jobs", 0, 10], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        plan.join("; ")
    }

    #[test]
    fn a_standard_receive_walks_the_index_without_sorting() {
        let plan = plan(RECEIVE_STANDARD);
        assert!(plan.contains("messages_ready"), "{plan}");
        assert!(!plan.contains("TEMP B-TREE"), "{plan}");
    }

    #[test]
    fn a_fifo_receive_walks_in_sequence_without_sorting() {
        let plan = plan(RECEIVE_FIFO);
        assert!(!plan.contains("TEMP B-TREE"), "{plan}");
        assert!(plan.contains("messages_group"), "the group check should use its index: {plan}");
    }
}
