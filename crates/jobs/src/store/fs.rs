//! Filesystem object store: buckets are folders under a root, keys are relative paths.
//!
//! Writes go to a temporary file in the destination folder, are fsynced, renamed over the
//! key and the folder is fsynced, so a crash leaves the old object or the new one. Keys are
//! validated (`keys::validate_key`) so nothing escapes the root. Objects up to the inline
//! limit (default 256 KiB: result records, thumbnails) are kept in the store's object pack
//! instead (see [`super::pack`]), which spares a file creation per object.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;

use super::pack::Pack;
use super::{ObjectMeta, ObjectStore, StoreError};
use crate::keys::{validate_bucket, validate_key};

const TMP_PREFIX: &str = ".pixq-tmp-";

/// Default inline limit: objects up to this size live in the object pack. A thumbnail of
/// a web image (100-250 KB) then commits with its result record, one fsync for both, where
/// a file costs a create, a rename and two fsyncs (file and folder).
pub const DEFAULT_INLINE_MAX: usize = 256 * 1024;

/// Files given to the store (`put_file`) above this size, or above the inline limit when
/// that is lower, are linked rather than copied: a link costs no write however large the
/// file, while a copy into the pack writes it twice (the log, then the database).
pub const LINK_ABOVE: usize = 64 * 1024;

/// A store rooted at a folder.
#[derive(Debug, Clone)]
pub struct FsStore {
    root: PathBuf,
    /// fsync file and folder on every write (default). Off, writes are still atomic and
    /// survive a process crash, but a power loss may roll the last ones back.
    fsync: bool,
    /// Objects up to this many bytes go to the pack (0: every object is a file).
    inline_max: usize,
    pack: Arc<Pack>,
    /// One file read ahead of its first read (`read_ahead`).
    ahead: Arc<std::sync::Mutex<Option<Ahead>>>,
}

/// A file's bytes read ahead of the first read of the key it is placed as, with what they
/// hash to and which file they came from.
#[derive(Debug)]
struct Ahead {
    bucket: String,
    key: String,
    bytes: Vec<u8>,
    digest: String,
    file: FileId,
}

/// Which file, in which state: device, inode, size and modification time (not the change
/// time, which linking the file changes). The key's file must be this one, unchanged, for
/// bytes read ahead to stand for it.
type FileId = (u64, u64, u64, i64, i64);

#[cfg(unix)]
fn file_id(m: &std::fs::Metadata) -> Option<FileId> {
    use std::os::unix::fs::MetadataExt;
    Some((m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

#[cfg(not(unix))]
fn file_id(_: &std::fs::Metadata) -> Option<FileId> {
    None
}

/// A file's version: its identity and both its times, the change time included (a copy
/// that keeps the modification time, `cp -p` or `rsync -t` over the file, still moves it;
/// nobody sets it by hand).
#[cfg(unix)]
fn version_of(m: &std::fs::Metadata) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let (dev, ino, size, secs, nanos) = file_id(m)?;
    Some(format!("file:{dev:x}-{ino:x}-{size:x}-{secs}.{nanos:09}-{}.{:09}", m.ctime(), m.ctime_nsec()))
}

#[cfg(not(unix))]
fn version_of(_: &std::fs::Metadata) -> Option<String> {
    None
}

/// Files larger than this are not read ahead: the wait a read-ahead fills (a fresh home's
/// fsyncs) holds a few MB of reading, and a larger file only delays its job's send.
const AHEAD_MAX: u64 = 32 << 20;

fn io(op: &'static str, key: &str, e: std::io::Error) -> StoreError {
    if e.kind() == std::io::ErrorKind::StorageFull {
        return StoreError::Full { key: key.to_string() };
    }
    StoreError::Io { op, key: key.to_string(), source: e }
}

impl FsStore {
    /// A store rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> FsStore {
        let root = root.into();
        FsStore {
            pack: Arc::new(Pack::new(&root, true)),
            root,
            fsync: true,
            inline_max: DEFAULT_INLINE_MAX,
            ahead: Arc::default(),
        }
    }

    /// Turns fsync on writes on or off (see the field's note).
    pub fn with_fsync(mut self, fsync: bool) -> FsStore {
        self.fsync = fsync;
        self.pack = Arc::new(Pack::new(&self.root, fsync));
        self
    }

    /// Objects up to `bytes` go to the object pack; 0 keeps every object as a file.
    pub fn with_inline_max(mut self, bytes: usize) -> FsStore {
        self.inline_max = bytes;
        self
    }

    /// Creates the object pack now if there is none (see [`Pack::create`]).
    pub fn create_pack(&self) -> Result<(), StoreError> {
        self.pack.create()
    }

    /// Write transactions the object pack has committed in this process (each one fsync).
    pub fn pack_commits(&self) -> u64 {
        self.pack.commits()
    }

    /// The root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, bucket: &str, key: &str) -> Result<PathBuf, StoreError> {
        validate_bucket(bucket)?;
        validate_key(key)?;
        Ok(self.root.join(bucket).join(key))
    }

    fn put_sync(&self, bucket: &str, key: &str, path: &Path, body: &[u8]) -> Result<(), StoreError> {
        if body.len() <= self.inline_max {
            self.pack.put(bucket, key, body.to_vec())?;
            return self.drop_larger_file(bucket, key, path);
        }
        let (dir, name) =
            (path.parent().expect("a key path has a parent"), path.file_name().expect("a key has a name"));
        let folder = Folder::open(&self.root, dir, "write", key, true)?.expect("made");
        let tmp = format!("{TMP_PREFIX}{}", crate::ids::random_hex(1));
        let write = || -> std::io::Result<()> {
            let mut f = folder.create_new(&tmp)?;
            f.write_all(body)?;
            if self.fsync {
                f.sync_all()?;
            }
            Ok(())
        };
        let placed = write().map_err(|e| io("write", key, e)).and_then(|()| {
            // The rename and dropping a smaller, older version from the pack are one step
            // for other writers of this key.
            self.pack.write(key, |c| {
                folder.rename(&tmp, name).map_err(|e| io("write", key, e))?;
                Pack::remove(c, bucket, key)
            })
        });
        if placed.is_err() {
            let _ = folder.remove(tmp.as_ref());
            return placed;
        }
        if self.fsync {
            folder.sync().map_err(|e| io("sync folder for", key, e))?;
        }
        Ok(())
    }

    /// After a key went into the pack: a file left from an earlier, larger version goes
    /// after the commit (so a reader always finds one of the two), and only if no larger
    /// version replaced ours since (a larger write removes the row under the same lock as its
    /// rename).
    fn drop_larger_file(&self, bucket: &str, key: &str, path: &Path) -> Result<(), StoreError> {
        if std::fs::symlink_metadata(path).is_ok() {
            self.pack.write(key, |c| {
                if !Pack::contains(c, bucket, key)? {
                    return Ok(());
                }
                match remove_beneath(&self.root, path, key) {
                    // A link on the way: whatever is behind it is not ours to remove (the
                    // object itself is in the pack, committed, and is what reads find).
                    Err(StoreError::Permanent(_)) => Ok(()),
                    r => r,
                }
            })?;
        }
        Ok(())
    }

    /// Places the file `source` as the object by a hard link (one more name for the same
    /// file: nothing copied), when it is over [`LINK_ABOVE`] (or the inline limit, when that
    /// is lower) and on this store's filesystem; `Ok(false)` when it is not (small, another
    /// filesystem, no links). The caller syncs the folder (once for many links).
    fn link_sync(&self, bucket: &str, key: &str, path: &Path, source: &Path, size: usize) -> Result<bool, StoreError> {
        if size <= self.inline_max.min(LINK_ABOVE) {
            return Ok(false);
        }
        // The file itself, never a symbolic link to it.
        let Ok(source) = std::fs::canonicalize(source) else { return Ok(false) };
        let (dir, name) =
            (path.parent().expect("a key path has a parent"), path.file_name().expect("a key has a name"));
        let folder = Folder::open(&self.root, dir, "write", key, true)?.expect("made");
        let tmp = format!("{TMP_PREFIX}{}", crate::ids::random_hex(1));
        if folder.link_in(&source, &tmp).is_err() {
            return Ok(false);
        }
        let placed = self.pack.write(key, |c| {
            folder.rename(&tmp, name).map_err(|e| io("write", key, e))?;
            Pack::remove(c, bucket, key)
        });
        if placed.is_err() {
            let _ = folder.remove(tmp.as_ref());
            return placed.map(|()| false);
        }
        Ok(true)
    }

    fn list_sync(root: &Path, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        // Start at the deepest folder the prefix names, then filter by the string prefix.
        let dir_part = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        let start = if dir_part.is_empty() { root.to_path_buf() } else { root.join(dir_part) };
        let mut out = Vec::new();
        let mut stack = vec![start];
        while let Some(dir) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io("list", prefix, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| io("list", prefix, e))?;
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.starts_with(TMP_PREFIX) {
                    continue;
                }
                let ft = entry.file_type().map_err(|e| io("list", prefix, e))?;
                if ft.is_dir() {
                    stack.push(entry.path());
                } else if ft.is_file() {
                    let rel = entry.path();
                    let rel = rel.strip_prefix(root).expect("walk stays under the root");
                    let key = rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
                    if key.starts_with(prefix) {
                        let size = entry.metadata().map_err(|e| io("list", prefix, e))?.len();
                        out.push(ObjectMeta { key, size, etag: None });
                    }
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| StoreError::Transient(format!("store task failed: {e}")))?
}

/// Refuses a key whose path under `root` passes through a symbolic link: a folder on the
/// way (the bucket's too) or, unless `last_too` is off, the key's file itself. Whoever can
/// write inside a shared store must not make its reads return, or its writes and deletes
/// reach, files outside it by planting a link. Every component that exists is looked at
/// (`lstat`); the first missing one ends the walk (what follows is made as plain folders).
/// The root itself is the operator's choice and may be a link.
fn unlinked(root: &Path, path: &Path, op: &'static str, key: &str, last_too: bool) -> Result<(), StoreError> {
    let Ok(rel) = path.strip_prefix(root) else { return Ok(()) };
    let parts: Vec<_> = rel.components().collect();
    let mut at = root.to_path_buf();
    for (i, part) in parts.iter().enumerate() {
        at.push(part);
        if i + 1 == parts.len() && !last_too {
            break;
        }
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(link_met(op, key, &at.strip_prefix(root).unwrap_or(&at).display().to_string()));
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
            Err(e) => return Err(io(op, key, e)),
        }
    }
    Ok(())
}

/// Opens a key's file under `root` for reading through no link at all. On Linux the kernel
/// resolves the whole path under the root refusing every link (`openat2`,
/// `RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH`); where that call is missing or filtered (Linux
/// before 5.6, some container profiles) and on other systems, the folders on the way are
/// looked at ([`unlinked`]) and the last component is opened with `O_NOFOLLOW`. A link met
/// is ELOOP.
/// Opened without waiting (a FIFO planted as a key's file would block the open, or its
/// read, for good), then refused unless it is a regular file (`InvalidData`).
fn open_unlinked(root: &Path, path: &Path) -> std::io::Result<std::fs::File> {
    #[cfg(unix)]
    {
        use rustix::fs::{Mode, OFlags};
        let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let mut opened = None;
        #[cfg(target_os = "linux")]
        if let Ok(rel) = path.strip_prefix(root) {
            use rustix::fs::ResolveFlags;
            let dir = rustix::fs::open(root, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
            let how = ResolveFlags::NO_SYMLINKS | ResolveFlags::BENEATH;
            match rustix::fs::openat2(&dir, rel, flags, Mode::empty(), how) {
                Ok(fd) => opened = Some(fd),
                Err(rustix::io::Errno::NOSYS | rustix::io::Errno::PERM) => {}
                Err(e) => return Err(e.into()),
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = root;
        let fd = match opened {
            Some(fd) => fd,
            None => {
                // No kernel resolution: the folders on the way are looked at first.
                if unlinked(root, path, "read", "", false).is_err() {
                    return Err(rustix::io::Errno::LOOP.into());
                }
                rustix::fs::open(path, flags | OFlags::NOFOLLOW, Mode::empty())?
            }
        };
        let file = std::fs::File::from(fd);
        if !file.metadata()?.is_file() {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "not a regular file"));
        }
        Ok(file)
    }
    #[cfg(not(unix))]
    {
        let _ = root;
        std::fs::File::open(path)
    }
}

/// The error for a link met where the store follows none.
fn link_met(op: &'static str, key: &str, at: &str) -> StoreError {
    StoreError::Permanent(format!("{op} {key}: {at} is a symbolic link, and the store follows none inside it"))
}

/// A key's folder, reached from the root through no link. On Unix an open directory: the
/// walk opens each component with `O_NOFOLLOW` (making it with `mkdirat` where asked), and
/// names in it are created, linked, renamed and removed relative to it, so a link swapped in
/// on the way after the walk changes nothing. Elsewhere the folder's path, looked at by
/// [`unlinked`].
struct Folder {
    #[cfg(unix)]
    fd: rustix::fd::OwnedFd,
    #[cfg(not(unix))]
    path: PathBuf,
}

impl Folder {
    /// `dir` (under `root`), or `None` when it is missing and `make` is off. A link on the
    /// way is [`link_met`].
    fn open(root: &Path, dir: &Path, op: &'static str, key: &str, make: bool) -> Result<Option<Folder>, StoreError> {
        #[cfg(unix)]
        {
            use rustix::fs::{Mode, OFlags};
            use rustix::io::Errno;
            let rel =
                dir.strip_prefix(root).map_err(|_| StoreError::Permanent(format!("{op} {key}: outside the store")))?;
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
            // The root itself may be a link: the operator chose it.
            let mut fd = match rustix::fs::open(root, flags, Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::NOENT) if make => {
                    std::fs::create_dir_all(root).map_err(|e| io("mkdir for", key, e))?;
                    rustix::fs::open(root, flags, Mode::empty()).map_err(|e| io("mkdir for", key, e.into()))?
                }
                Err(Errno::NOENT) => return Ok(None),
                Err(e) => return Err(io(op, key, e.into())),
            };
            let mut walked = PathBuf::new();
            for part in rel.components() {
                let name = part.as_os_str();
                walked.push(name);
                let next = match rustix::fs::openat(&fd, name, flags | OFlags::NOFOLLOW, Mode::empty()) {
                    Err(Errno::NOENT) if make => {
                        match rustix::fs::mkdirat(&fd, name, Mode::from_raw_mode(0o777)) {
                            Ok(()) | Err(Errno::EXIST) => {}
                            Err(e) => return Err(io("mkdir for", key, e.into())),
                        }
                        rustix::fs::openat(&fd, name, flags | OFlags::NOFOLLOW, Mode::empty())
                    }
                    other => other,
                };
                fd = match next {
                    Ok(next) => next,
                    Err(Errno::NOENT) => return Ok(None),
                    // O_NOFOLLOW on a link (ENOTDIR where O_DIRECTORY is checked first).
                    Err(Errno::LOOP) => return Err(link_met(op, key, &walked.display().to_string())),
                    Err(Errno::NOTDIR)
                        if std::fs::symlink_metadata(root.join(&walked)).is_ok_and(|m| m.file_type().is_symlink()) =>
                    {
                        return Err(link_met(op, key, &walked.display().to_string()));
                    }
                    Err(e) => return Err(io(op, key, e.into())),
                };
            }
            Ok(Some(Folder { fd }))
        }
        #[cfg(not(unix))]
        {
            unlinked(root, dir, op, key, true)?;
            if make {
                std::fs::create_dir_all(dir).map_err(|e| io("mkdir for", key, e))?;
                unlinked(root, dir, op, key, true)?;
            } else if !dir.is_dir() {
                return Ok(None);
            }
            Ok(Some(Folder { path: dir.to_path_buf() }))
        }
    }

    /// A new file named `name` here, never an existing one (nor a link).
    fn create_new(&self, name: &str) -> std::io::Result<std::fs::File> {
        #[cfg(unix)]
        {
            use rustix::fs::{Mode, OFlags};
            let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            Ok(std::fs::File::from(rustix::fs::openat(&self.fd, name, flags, Mode::from_raw_mode(0o666))?))
        }
        #[cfg(not(unix))]
        {
            std::fs::OpenOptions::new().write(true).create_new(true).open(self.path.join(name))
        }
    }

    /// A hard link named `name` here to the file `source`.
    fn link_in(&self, source: &Path, name: &str) -> std::io::Result<()> {
        #[cfg(unix)]
        {
            rustix::fs::linkat(rustix::fs::CWD, source, &self.fd, name, rustix::fs::AtFlags::empty())?;
            Ok(())
        }
        #[cfg(not(unix))]
        {
            std::fs::hard_link(source, self.path.join(name))
        }
    }

    /// Renames `from` to `to`, both here, replacing what `to` names (a link itself, never
    /// what it points to).
    fn rename(&self, from: &str, to: &std::ffi::OsStr) -> std::io::Result<()> {
        #[cfg(unix)]
        {
            rustix::fs::renameat(&self.fd, from, &self.fd, to)?;
            Ok(())
        }
        #[cfg(not(unix))]
        {
            std::fs::rename(self.path.join(from), self.path.join(to))
        }
    }

    /// Removes the name `name` here (a link itself, never what it points to); a missing one
    /// is fine.
    fn remove(&self, name: &std::ffi::OsStr) -> std::io::Result<()> {
        #[cfg(unix)]
        let removed = rustix::fs::unlinkat(&self.fd, name, rustix::fs::AtFlags::empty()).map_err(std::io::Error::from);
        #[cfg(not(unix))]
        let removed = std::fs::remove_file(self.path.join(name));
        match removed {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }

    fn sync(&self) -> std::io::Result<()> {
        #[cfg(unix)]
        {
            rustix::fs::fsync(&self.fd)?;
            Ok(())
        }
        #[cfg(not(unix))]
        {
            std::fs::File::open(&self.path)?.sync_all()
        }
    }
}

/// Removes a key's file at `path` under `root` through no link on the way (a link as the
/// file itself is removed, never followed); a missing file or folder is fine.
fn remove_beneath(root: &Path, path: &Path, key: &str) -> Result<(), StoreError> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else { return Ok(()) };
    let Some(folder) = Folder::open(root, dir, "delete", key, false)? else { return Ok(()) };
    folder.remove(name).map_err(|e| io("delete", key, e))
}

#[async_trait]
impl ObjectStore for FsStore {
    async fn head(&self, bucket: &str, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        let path = self.path(bucket, key)?;
        // A small object is answered by the pack's reader at once (microseconds, never behind
        // a commit): no hand-off to a blocking thread. Files are looked at off the runtime.
        if let Some(size) = self.pack.size(bucket, key)? {
            return Ok(Some(ObjectMeta { key: key.to_string(), size, etag: None }));
        }
        let (pack, bucket, key, root) = (self.pack.clone(), bucket.to_string(), key.to_string(), self.root.clone());
        blocking(move || {
            // Pack, file, pack: a writer moving the key between the two is seen on one side.
            for last in [false, true] {
                if let Some(size) = pack.size(&bucket, &key)? {
                    return Ok(Some(ObjectMeta { key, size, etag: None }));
                }
                if last {
                    break;
                }
                unlinked(&root, &path, "head", &key, true)?;
                match std::fs::symlink_metadata(&path) {
                    Ok(m) if m.is_file() => return Ok(Some(ObjectMeta { key, size: m.len(), etag: None })),
                    Ok(_) => return Ok(None),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io("head", &key, e)),
                }
            }
            Ok(None)
        })
        .await
    }

    async fn get(&self, bucket: &str, key: &str) -> Result<Vec<u8>, StoreError> {
        self.get_at_most(bucket, key, u64::MAX).await
    }

    async fn get_at_most(&self, bucket: &str, key: &str, max: u64) -> Result<Vec<u8>, StoreError> {
        let path = self.path(bucket, key)?;
        let at_most = move |body: Vec<u8>, key: &str| {
            if body.len() as u64 > max {
                crate::buffers::give_back(body);
                return Err(StoreError::TooLarge { key: key.to_string(), max });
            }
            Ok(body)
        };
        if let Some(body) = self.pack.get(bucket, key)? {
            return at_most(body, key);
        }
        let (pack, bucket, key, root) = (self.pack.clone(), bucket.to_string(), key.to_string(), self.root.clone());
        blocking(move || {
            for last in [false, true] {
                if let Some(body) = pack.get(&bucket, &key)? {
                    return at_most(body, &key);
                }
                if last {
                    break;
                }
                match open_unlinked(&root, &path).and_then(|mut f| crate::buffers::read_open(&mut f, max)) {
                    Ok(b) => return at_most(b, &key),
                    Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::IsADirectory) => {}
                    // A link on the way: the walk names it (unless it went meanwhile).
                    Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
                        unlinked(&root, &path, "read", &key, true)?;
                        return Err(link_met("read", &key, "a component of its path"));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                        return Err(StoreError::Permanent(format!("read {key}: not a regular file")));
                    }
                    Err(e) => return Err(io("read", &key, e)),
                }
            }
            Err(StoreError::NotFound { bucket, key })
        })
        .await
    }

    async fn put(&self, bucket: &str, key: &str, body: Vec<u8>, _content_type: &str) -> Result<(), StoreError> {
        let path = self.path(bucket, key)?;
        let (this, bucket, key) = (self.clone(), bucket.to_string(), key.to_string());
        blocking(move || this.put_sync(&bucket, &key, &path, &body)).await
    }

    async fn put_all(&self, bucket: &str, objects: Vec<(String, Vec<u8>, &'static str)>) -> Result<(), StoreError> {
        let paths = objects.iter().map(|(k, _, _)| self.path(bucket, k)).collect::<Result<Vec<_>, _>>()?;
        let (this, bucket) = (self.clone(), bucket.to_string());
        blocking(move || {
            if objects.iter().any(|(_, body, _)| body.len() > this.inline_max) {
                for ((key, body, _), path) in objects.iter().zip(&paths) {
                    this.put_sync(&bucket, key, path, body)?;
                }
                return Ok(());
            }
            let keys: Vec<String> = objects.iter().map(|(k, _, _)| k.clone()).collect();
            this.pack.put_all(&bucket, objects.into_iter().map(|(k, body, _)| (k, body)).collect())?;
            for (key, path) in keys.iter().zip(&paths) {
                this.drop_larger_file(&bucket, key, path)?;
            }
            Ok(())
        })
        .await
    }

    fn small_object_max(&self) -> usize {
        self.inline_max
    }

    fn links_files(&self) -> bool {
        true
    }

    async fn version_tag(&self, bucket: &str, key: &str) -> Option<String> {
        // A key in the pack is what reads get (a file left at its path is not): no tag.
        if self.pack.size(bucket, key).ok()?.is_some() {
            return None;
        }
        let path = self.path(bucket, key).ok()?;
        let root = self.root.clone();
        let key = key.to_string();
        tokio::task::spawn_blocking(move || {
            // The file a read would get (no link: such a key is refused anyway).
            unlinked(&root, &path, "head", &key, true).ok()?;
            version_of(&std::fs::symlink_metadata(&path).ok()?)
        })
        .await
        .ok()
        .flatten()
    }

    fn recycle(&self, bytes: Vec<u8>) {
        crate::buffers::give_back(bytes)
    }

    async fn open_file(&self, bucket: &str, key: &str) -> Result<Option<std::fs::File>, StoreError> {
        let path = self.path(bucket, key)?;
        // What a read would get: the pack's copy first.
        if self.pack.size(bucket, key)?.is_some() {
            return Ok(None);
        }
        let (pack, bucket, key, root) = (self.pack.clone(), bucket.to_string(), key.to_string(), self.root.clone());
        blocking(move || match open_unlinked(&root, &path) {
            // A writer that moved the key into the pack meanwhile: the pack's, as for reads.
            Ok(f) => Ok((pack.size(&bucket, &key)?.is_none()).then_some(f)),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::IsADirectory) => Ok(None),
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
                unlinked(&root, &path, "read", &key, true)?;
                Err(link_met("read", &key, "a component of its path"))
            }
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                Err(StoreError::Permanent(format!("read {key}: not a regular file")))
            }
            Err(e) => Err(io("read", &key, e)),
        })
        .await
    }

    async fn read_ahead(&self, bucket: &str, key: &str, source: &Path) -> bool {
        if self.path(bucket, key).is_err() {
            return false;
        }
        let (ahead, bucket, key, source) =
            (self.ahead.clone(), bucket.to_string(), key.to_string(), source.to_path_buf());
        let read = move || -> Option<()> {
            // One file at a time: its bytes wait in memory for their job.
            if ahead.lock().ok()?.is_some() {
                return None;
            }
            let mut f = std::fs::File::open(&source).ok()?;
            let file = file_id(&f.metadata().ok()?).filter(|id| id.2 <= AHEAD_MAX)?;
            let bytes = crate::buffers::read_open(&mut f, AHEAD_MAX).ok()?;
            // Changed while it was read: left to the worker's own read.
            if file_id(&f.metadata().ok()?) != Some(file) || bytes.len() as u64 != file.2 {
                crate::buffers::give_back(bytes);
                return None;
            }
            let digest = crate::keys::content_digest(&bytes);
            let mut slot = ahead.lock().ok()?;
            if slot.is_some() {
                // Another read-ahead finished first: it keeps its place.
                drop(slot);
                crate::buffers::give_back(bytes);
                return None;
            }
            *slot = Some(Ahead { bucket, key, bytes, digest, file });
            Some(())
        };
        tokio::task::spawn_blocking(read).await.ok().flatten().is_some()
    }

    async fn get_known(&self, bucket: &str, key: &str, max: u64) -> Result<(Vec<u8>, Option<String>), StoreError> {
        let taken = {
            let mut slot = self.ahead.lock().map_err(|_| StoreError::Transient("read-ahead lock poisoned".into()))?;
            match slot.as_ref() {
                Some(a) if a.bucket == bucket && a.key == key => slot.take(),
                _ => None,
            }
        };
        if let Some(a) = taken {
            // The key's file must still be the file read, as it was then (a link to it).
            let path = self.path(bucket, key)?;
            let now =
                tokio::task::spawn_blocking(move || std::fs::symlink_metadata(path).ok().as_ref().and_then(file_id))
                    .await
                    .ok()
                    .flatten();
            if now == Some(a.file) && a.bytes.len() as u64 <= max {
                return Ok((a.bytes, Some(a.digest)));
            }
            crate::buffers::give_back(a.bytes);
        }
        Ok((self.get_at_most(bucket, key, max).await?, None))
    }

    async fn put_file(&self, bucket: &str, key: &str, source: &Path, content_type: &str) -> Result<(), StoreError> {
        self.put_files(bucket, vec![(key.to_string(), source.to_path_buf())], content_type).await
    }

    async fn put_files(
        &self,
        bucket: &str,
        files: Vec<(String, PathBuf)>,
        _content_type: &str,
    ) -> Result<(), StoreError> {
        let paths = files.iter().map(|(k, _)| self.path(bucket, k)).collect::<Result<Vec<_>, _>>()?;
        let (this, bucket) = (self.clone(), bucket.to_string());
        blocking(move || {
            // Folders holding new links, synced once each after all of them are made.
            let mut linked: Vec<(&Path, &str)> = Vec::new();
            for ((key, source), path) in files.iter().zip(&paths) {
                let size = std::fs::metadata(source).map_err(|e| io("read the file for", key, e))?.len();
                if this.link_sync(&bucket, key, path, source, usize::try_from(size).unwrap_or(usize::MAX))? {
                    linked.push((path.parent().expect("a key path has a parent"), key));
                    continue;
                }
                let body = std::fs::read(source).map_err(|e| io("read the file for", key, e))?;
                this.put_sync(&bucket, key, path, &body)?;
            }
            linked.sort();
            linked.dedup_by(|a, b| a.0 == b.0);
            if this.fsync {
                for (dir, key) in linked {
                    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io("sync folder for", key, e))?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        validate_bucket(bucket)?;
        if prefix.contains("..") || prefix.starts_with('/') || prefix.contains('\0') {
            validate_key(prefix)?;
        }
        let root = self.root.join(bucket);
        // No folder for the prefix: only the pack can hold its keys, and its reader answers
        // at once (pack, folder, pack, as below).
        let folder = root.join(&prefix[..prefix.rfind('/').map_or(0, |i| i + 1)]);
        let before = self.pack.list(bucket, prefix)?;
        if !folder.exists() {
            let mut all: std::collections::BTreeMap<String, ObjectMeta> =
                before.into_iter().map(|m| (m.key.clone(), m)).collect();
            all.extend(self.pack.list(bucket, prefix)?.into_iter().map(|m| (m.key.clone(), m)));
            return Ok(all.into_values().collect());
        }
        let (pack, bucket, prefix, store_root) =
            (self.pack.clone(), bucket.to_string(), prefix.to_string(), self.root.clone());
        blocking(move || {
            // The walk itself never follows a link (entries are looked at, not followed); the
            // folders it starts from are checked here.
            unlinked(&store_root, &folder, "list", &prefix, true)?;
            // Pack, files, pack: a key a writer moves between the two meanwhile is seen on
            // at least one side, and appears once.
            let before = pack.list(&bucket, &prefix)?;
            let files = FsStore::list_sync(&root, &prefix)?;
            if before.is_empty() && !pack.exists() {
                return Ok(files);
            }
            let after = pack.list(&bucket, &prefix)?;
            let mut all: std::collections::BTreeMap<String, ObjectMeta> =
                files.into_iter().map(|m| (m.key.clone(), m)).collect();
            all.extend(before.into_iter().chain(after).map(|m| (m.key.clone(), m)));
            Ok(all.into_values().collect())
        })
        .await
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
        let path = self.path(bucket, key)?;
        let (pack, bucket, key, root) = (self.pack.clone(), bucket.to_string(), key.to_string(), self.root.clone());
        blocking(move || {
            // A link as the key's file is removed itself (never what it points to); a link on
            // the way to it is refused, and the pack's removal rolled back with it.
            pack.write(&key, |c| {
                Pack::remove(c, &bucket, &key)?;
                remove_beneath(&root, &path, &key)
            })
        })
        .await
    }

    async fn delete_many(&self, bucket: &str, keys: &[String]) -> Result<(), StoreError> {
        let paths = keys.iter().map(|k| self.path(bucket, k).map(|p| (k.clone(), p))).collect::<Result<Vec<_>, _>>()?;
        let (pack, bucket, root) = (self.pack.clone(), bucket.to_string(), self.root.clone());
        let Some(first) = paths.first().map(|(k, _)| k.clone()) else { return Ok(()) };
        // One pack transaction (one commit) for all of them.
        blocking(move || {
            for (key, path) in &paths {
                unlinked(&root, path, "delete", key, false)?;
            }
            pack.write(&first, |c| {
                for (key, path) in &paths {
                    Pack::remove(c, &bucket, key)?;
                    remove_beneath(&root, path, key)?;
                }
                Ok(())
            })
        })
        .await
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::{Folder, StoreError, open_unlinked};
    use std::io::Write;

    /// A write walks to its folder once and works inside it: a folder on the way swapped
    /// for a link afterwards changes nothing (the file lands where the walk went, nothing
    /// outside), and the next walk refuses the link.
    #[test]
    fn a_write_keeps_its_folder_through_a_swap() {
        let d = tempfile::tempdir().unwrap();
        let (root, outside) = (d.path().join("root"), d.path().join("outside"));
        std::fs::create_dir_all(&outside).unwrap();
        let folder = Folder::open(&root, &root.join("b/k"), "write", "k/y", true).unwrap().unwrap();
        std::fs::rename(root.join("b"), root.join("b-moved")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("b")).unwrap();
        std::fs::create_dir_all(outside.join("k")).unwrap();
        folder.create_new("x").unwrap().write_all(b"mine").unwrap();
        folder.rename("x", "y".as_ref()).unwrap();
        folder.sync().unwrap();
        assert_eq!(std::fs::read(root.join("b-moved/k/y")).unwrap(), b"mine");
        assert_eq!(std::fs::read_dir(outside.join("k")).unwrap().count(), 0, "nothing outside");
        match Folder::open(&root, &root.join("b/k"), "write", "k/y", true) {
            Err(StoreError::Permanent(m)) => assert!(m.contains("b is a symbolic link"), "{m}"),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("walked through a link"),
        }
        // A missing folder is no folder when nothing is to be made.
        assert!(Folder::open(&root, &root.join("b-moved/none"), "delete", "none/y", false).unwrap().is_none());
    }

    /// The read's open itself refuses a link anywhere under the root (the kernel resolves
    /// the path: Linux 5.6 and later, where `openat2` is not filtered), so a folder swapped
    /// for a link after the store looked at it is refused too.
    #[test]
    fn a_read_resolves_through_no_link_at_all() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        std::fs::create_dir_all(root.join("b")).unwrap();
        std::fs::create_dir_all(d.path().join("outside")).unwrap();
        std::fs::write(d.path().join("outside/f"), b"outside").unwrap();
        std::fs::write(root.join("b/f"), b"inside").unwrap();
        std::os::unix::fs::symlink(d.path().join("outside"), root.join("linked")).unwrap();
        std::os::unix::fs::symlink(root.join("b/f"), root.join("b/alias")).unwrap();
        let read = |p: &str| {
            open_unlinked(&root, &root.join(p)).map(|mut f| {
                let mut v = Vec::new();
                std::io::Read::read_to_end(&mut f, &mut v).unwrap();
                v
            })
        };
        assert_eq!(read("b/f").unwrap(), b"inside");
        // Where the kernel has no openat2 (or a container filters it) the store falls back
        // to O_NOFOLLOW on the last component: nothing here to check then.
        let dir = std::fs::File::open(&root).unwrap();
        let how = rustix::fs::ResolveFlags::NO_SYMLINKS;
        let flags = rustix::fs::OFlags::RDONLY;
        if let Err(rustix::io::Errno::NOSYS | rustix::io::Errno::PERM) =
            rustix::fs::openat2(&dir, "b/f", flags, rustix::fs::Mode::empty(), how)
        {
            eprintln!("no openat2 here: the kernel's resolution is not checked");
            return;
        }
        let eloop = Some(rustix::io::Errno::LOOP.raw_os_error());
        assert_eq!(read("linked/f").unwrap_err().raw_os_error(), eloop, "a folder link on the way");
        assert_eq!(read("b/alias").unwrap_err().raw_os_error(), eloop, "a link as the file, even to one inside");
        assert_eq!(read("b/../../outside/f").unwrap_err().raw_os_error(), Some(rustix::io::Errno::XDEV.raw_os_error()));
    }
}
