//! Filesystem object store: buckets are folders under a root, keys are relative paths.
//!
//! Writes go to a temporary file in the destination folder, are fsynced, renamed over the
//! key and the folder is fsynced, so a crash leaves the old object or the new one. Keys are
//! validated (`keys::validate_key`) so nothing escapes the root.

use std::io::Write;
use std::path::{Path, PathBuf};

use async_trait::async_trait;

use super::{ObjectMeta, ObjectStore, StoreError};
use crate::keys::{validate_bucket, validate_key};

const TMP_PREFIX: &str = ".pixq-tmp-";

/// A store rooted at a folder.
#[derive(Debug, Clone)]
pub struct FsStore {
    root: PathBuf,
    /// fsync file and folder on every write (default). Off, writes are still atomic and
    /// survive a process crash, but a power loss may roll the last ones back.
    fsync: bool,
}

fn io(op: &'static str, key: &str, e: std::io::Error) -> StoreError {
    if e.kind() == std::io::ErrorKind::StorageFull {
        return StoreError::Full { key: key.to_string() };
    }
    StoreError::Io { op, key: key.to_string(), source: e }
}

impl FsStore {
    /// A store rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> FsStore {
        FsStore { root: root.into(), fsync: true }
    }

    /// Turns fsync on writes on or off (see the field's note).
    pub fn with_fsync(mut self, fsync: bool) -> FsStore {
        self.fsync = fsync;
        self
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

    fn put_sync(path: &Path, key: &str, body: &[u8], fsync: bool) -> Result<(), StoreError> {
        let dir = path.parent().expect("a key path has a parent");
        std::fs::create_dir_all(dir).map_err(|e| io("mkdir for", key, e))?;
        let tmp = dir.join(format!("{TMP_PREFIX}{}", crate::ids::random_hex(1)));
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(body)?;
            if fsync {
                f.sync_all()?;
            }
            std::fs::rename(&tmp, path)?;
            if fsync {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(|e| io("write", key, e))
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

#[async_trait]
impl ObjectStore for FsStore {
    async fn head(&self, bucket: &str, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        let path = self.path(bucket, key)?;
        let key = key.to_string();
        blocking(move || match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(Some(ObjectMeta { key, size: m.len(), etag: None })),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("head", &key, e)),
        })
        .await
    }

    async fn get(&self, bucket: &str, key: &str) -> Result<Vec<u8>, StoreError> {
        let path = self.path(bucket, key)?;
        let (bucket, key) = (bucket.to_string(), key.to_string());
        blocking(move || match std::fs::read(&path) {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StoreError::NotFound { bucket, key }),
            Err(e) if e.kind() == std::io::ErrorKind::IsADirectory => Err(StoreError::NotFound { bucket, key }),
            Err(e) => Err(io("read", &key, e)),
        })
        .await
    }

    async fn put(&self, bucket: &str, key: &str, body: Vec<u8>, _content_type: &str) -> Result<(), StoreError> {
        let path = self.path(bucket, key)?;
        let (key, fsync) = (key.to_string(), self.fsync);
        blocking(move || FsStore::put_sync(&path, &key, &body, fsync)).await
    }

    async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        validate_bucket(bucket)?;
        if prefix.contains("..") || prefix.starts_with('/') || prefix.contains('\0') {
            validate_key(prefix)?;
        }
        let root = self.root.join(bucket);
        let prefix = prefix.to_string();
        blocking(move || FsStore::list_sync(&root, &prefix)).await
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
        let path = self.path(bucket, key)?;
        let key = key.to_string();
        blocking(move || match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("delete", &key, e)),
        })
        .await
    }
}
