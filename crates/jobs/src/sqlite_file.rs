//! Creating the embedded default's SQLite files (the queue, the store's object pack) without
//! the cost of SQLite's own first write.
//!
//! A new database switched to WAL writes its first page through a rollback journal: the
//! journal, the folder, the journal again and the database are each synced, then the new
//! log and the folder once more. Six fsyncs per file, and a fresh home has two files, all
//! before the first job can be queued. Here the file is built under a temporary name with
//! syncing off (nobody else can see it), synced once, linked to its name (the first of
//! racing creators wins, the others open its file) and the folder synced: two fsyncs, and
//! the file either exists whole, schema and all, or not at all, whatever crash comes.

use std::path::Path;

use rusqlite::Connection;

/// Creates the database at `path` in WAL mode with `schema` (one transaction), unless a
/// file is there already. `Ok(true)` when this call created it; `Ok(false)` when the file
/// existed, another process created it first, or the filesystem has no hard links (SQLite
/// then creates it on open). The caller opens it as usual afterwards.
pub(crate) fn create_if_missing(path: &Path, schema: &str) -> std::io::Result<bool> {
    if std::fs::symlink_metadata(path).is_ok() {
        return Ok(false);
    }
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    remove_stale(dir, &format!(".{name}.new-"));
    let tmp = dir.join(format!(".{name}.new-{}", crate::ids::random_hex(1)));
    let built = build(&tmp, schema).and_then(|()| std::fs::File::open(&tmp)?.sync_all());
    let placed = built.map(|()| match std::fs::hard_link(&tmp, path) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
        // A filesystem without hard links: SQLite creates the file itself, the slow way.
        Err(e) => {
            tracing::debug!(error = %e, path = %path.display(), "no hard link for a new database; SQLite creates it");
            false
        }
    });
    for leftover in ["", "-journal", "-wal", "-shm"] {
        let mut p = tmp.clone().into_os_string();
        p.push(leftover);
        let _ = std::fs::remove_file(p);
    }
    let created = placed?;
    if created {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(created)
}

/// A creator that did not finish (killed, or a command that exited while its home was
/// still being made in the background) leaves its temporary file: those over a minute old
/// go. A younger one may be another creator's at work.
fn remove_stale(dir: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let stale = e
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > std::time::Duration::from_secs(60)));
        if stale && e.file_name().to_string_lossy().starts_with(prefix) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// The file at `tmp`: schema written straight into it (rollback journal in memory, no
/// syncs), then marked WAL. Closing leaves no log behind.
fn build(tmp: &Path, schema: &str) -> std::io::Result<()> {
    let go = || -> rusqlite::Result<String> {
        let c = Connection::open(tmp)?;
        c.pragma_update(None, "journal_mode", "MEMORY")?;
        c.pragma_update(None, "synchronous", "OFF")?;
        c.execute_batch(&format!("BEGIN;\n{schema}\nCOMMIT;"))?;
        let mode: String = c.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        c.close().map_err(|(_, e)| e)?;
        Ok(mode)
    };
    match go().map_err(std::io::Error::other)? {
        m if m.eq_ignore_ascii_case("wal") => Ok(()),
        m => Err(std::io::Error::other(format!("the new database stayed in journal mode {m}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::create_if_missing;
    use rusqlite::Connection;

    const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, v INTEGER NOT NULL);";

    fn names(dir: &std::path::Path) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn a_new_file_comes_whole_in_wal_mode_and_leaves_nothing_else() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("q.db");
        assert!(create_if_missing(&p, SCHEMA).unwrap());
        assert_eq!(names(d.path()), ["q.db"], "no temporary file, journal or log left");
        let c = Connection::open(&p).unwrap();
        let mode: String = c.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
        c.execute("INSERT INTO t VALUES ('a', 1)", []).unwrap();
        let v: i64 = c.query_row("SELECT v FROM t WHERE k = 'a'", [], |r| r.get(0)).unwrap();
        assert_eq!(v, 1);
        let ok: String = c.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
        assert_eq!(ok, "ok");
    }

    #[test]
    fn an_existing_file_is_left_as_it_is() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("q.db");
        // Made the old way, with a row in it; and an empty file another opener left.
        let c = Connection::open(&p).unwrap();
        c.execute_batch(SCHEMA).unwrap();
        c.execute("INSERT INTO t VALUES ('kept', 7)", []).unwrap();
        drop(c);
        assert!(!create_if_missing(&p, SCHEMA).unwrap());
        let v: i64 =
            Connection::open(&p).unwrap().query_row("SELECT v FROM t WHERE k = 'kept'", [], |r| r.get(0)).unwrap();
        assert_eq!(v, 7);
        let empty = d.path().join("empty.db");
        std::fs::write(&empty, b"").unwrap();
        assert!(!create_if_missing(&empty, SCHEMA).unwrap());
        assert_eq!(std::fs::metadata(&empty).unwrap().len(), 0);
    }

    #[test]
    fn a_killed_creators_leftovers_go_and_a_working_ones_stay() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("q.db");
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(120);
        for leftover in [".q.db.new-dead", ".q.db.new-dead-journal"] {
            std::fs::File::create(d.path().join(leftover)).unwrap().set_modified(old).unwrap();
        }
        std::fs::write(d.path().join(".q.db.new-live"), b"").unwrap();
        std::fs::File::create(d.path().join(".other.db.new-x")).unwrap().set_modified(old).unwrap();
        assert!(create_if_missing(&p, SCHEMA).unwrap());
        assert_eq!(names(d.path()), [".other.db.new-x", ".q.db.new-live", "q.db"]);
    }

    #[test]
    fn racing_creators_share_one_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("q.db");
        let created: Vec<bool> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8).map(|_| s.spawn(|| create_if_missing(&p, SCHEMA).unwrap())).collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(created.iter().filter(|&&c| c).count(), 1, "{created:?}");
        assert_eq!(names(d.path()), ["q.db"]);
        let n: i64 = Connection::open(&p).unwrap().query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 0);
    }

    #[test]
    fn a_bad_schema_creates_nothing() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("q.db");
        assert!(create_if_missing(&p, "CREATE TABLE broken (").is_err());
        assert!(names(d.path()).is_empty(), "{:?}", names(d.path()));
    }
}
