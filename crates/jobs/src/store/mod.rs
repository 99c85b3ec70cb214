//! The `ObjectStore` port and its backends: `fs` (embedded default) and `s3` (feature `aws`).

#[cfg(feature = "local")]
pub mod fs;
#[cfg(feature = "local")]
pub mod pack;
#[cfg(feature = "aws")]
pub mod s3;

use async_trait::async_trait;

use crate::keys::KeyError;

/// What `head` and `list` report about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Opaque content tag (S3 ETag) when the backend has one.
    pub etag: Option<String>,
}

/// Object-store failures, split into what retrying can fix and what it cannot.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The object does not exist.
    #[error("object {bucket}/{key} not found")]
    NotFound {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
    },
    /// The key or bucket is not acceptable.
    #[error(transparent)]
    InvalidKey(#[from] KeyError),
    /// The object is larger than the reader takes (found while reading it: it may have
    /// grown since its size was looked up).
    #[error("object {key} is larger than {max} bytes")]
    TooLarge {
        /// Key.
        key: String,
        /// The most the reader takes.
        max: u64,
    },
    /// The device is full.
    #[error("no space left on the device while writing {key}")]
    Full {
        /// Key being written.
        key: String,
    },
    /// An I/O or network error that may pass.
    #[error("{op} {key}: {source}")]
    Io {
        /// Operation.
        op: &'static str,
        /// Key.
        key: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A backend error that may pass (throttling, 5xx, timeouts).
    #[error("{0}")]
    Transient(String),
    /// A backend error that will not pass (permissions, bad request).
    #[error("{0}")]
    Permanent(String),
}

impl StoreError {
    /// Whether retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Io { .. } | StoreError::Transient(_) | StoreError::Full { .. })
    }
}

/// Object storage as pixq uses it: whole-object reads and writes, listing by prefix.
#[async_trait]
pub trait ObjectStore: Send + Sync + std::fmt::Debug {
    /// Size and tag of an object, `None` when it does not exist.
    async fn head(&self, bucket: &str, key: &str) -> Result<Option<ObjectMeta>, StoreError>;
    /// The whole object.
    async fn get(&self, bucket: &str, key: &str) -> Result<Vec<u8>, StoreError>;
    /// The whole object if it is at most `max` bytes; a larger one is refused
    /// ([`StoreError::TooLarge`]) having read little more than `max` of it, even one that
    /// grew after a [`ObjectStore::head`] said it was small. The default reads it all first:
    /// every store of this crate overrides it.
    async fn get_at_most(&self, bucket: &str, key: &str, max: u64) -> Result<Vec<u8>, StoreError> {
        let body = self.get(bucket, key).await?;
        if body.len() as u64 > max {
            return Err(StoreError::TooLarge { key: key.to_string(), max });
        }
        Ok(body)
    }
    /// Writes an object atomically: readers see the old object or the new one, never a part.
    async fn put(&self, bucket: &str, key: &str, body: Vec<u8>, content_type: &str) -> Result<(), StoreError>;
    /// Objects whose key starts with `prefix`, sorted by key.
    async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError>;
    /// Deletes an object; deleting a missing object is not an error.
    async fn delete(&self, bucket: &str, key: &str) -> Result<(), StoreError>;
    /// Writes several objects of one bucket in order: a reader that sees one of them sees
    /// the ones before it too (a result record after the outputs it names). A store may
    /// commit them together: the filesystem store writes objects up to
    /// [`ObjectStore::small_object_max`] in one transaction of its pack, one fsync for all.
    async fn put_all(&self, bucket: &str, objects: Vec<(String, Vec<u8>, &'static str)>) -> Result<(), StoreError> {
        for (key, body, content_type) in objects {
            self.put(bucket, &key, body, content_type).await?;
        }
        Ok(())
    }
    /// Objects up to this many bytes are committed together by [`ObjectStore::put_all`]
    /// (0: the store writes each on its own).
    fn small_object_max(&self) -> usize {
        0
    }
    /// Takes back the bytes of an object read with [`ObjectStore::get`] once the caller is
    /// done with them: a store that reads into kept buffers (the filesystem store,
    /// `buffers`) serves a later read with it. By default they are freed, as an S3 body on
    /// a Lambda must be: kept, it would hold memory the kernels are budgeted to use.
    fn recycle(&self, _bytes: Vec<u8>) {}

    /// The object's file, opened for reading, where this store keeps the object as a file
    /// of its own (the filesystem store, outside its pack), so a caller can send it in
    /// pieces instead of holding it whole. `Ok(None)`: read it with `get`. A link on the
    /// way is refused as `get` refuses it.
    async fn open_file(&self, _bucket: &str, _key: &str) -> Result<Option<std::fs::File>, StoreError> {
        Ok(None)
    }
    /// Whether [`ObjectStore::put_file`] places a large file without reading it (a store on
    /// this machine's disk links it).
    fn links_files(&self) -> bool {
        false
    }
    /// A tag that changes whenever the object's bytes may have, for a store whose
    /// [`ObjectStore::head`] gives no ETag: the filesystem store's file identity (device,
    /// inode, size, modification time). A cache of what an object hashes to keys on it, so
    /// a hit reads nothing. `None` (the default, and a small object in the pack): no tag;
    /// such a cache reads the object again.
    async fn version_tag(&self, _bucket: &str, _key: &str) -> Option<String> {
        None
    }
    /// Writes the file at `source` as the object: read and uploaded, or, by a store on the
    /// same disk, linked (a reader of the object then gets the file as it is at that time;
    /// the worker hashes what it reads, so a file changed later is caught by its digest).
    async fn put_file(
        &self,
        bucket: &str,
        key: &str,
        source: &std::path::Path,
        content_type: &str,
    ) -> Result<(), StoreError> {
        let path = source.to_path_buf();
        let body = tokio::task::spawn_blocking(move || std::fs::read(path))
            .await
            .map_err(|e| StoreError::Transient(format!("reading task failed: {e}")))?
            .map_err(|e| StoreError::Io { op: "read the file for", key: key.to_string(), source: e })?;
        self.put(bucket, key, body, content_type).await
    }
    /// [`ObjectStore::put_file`] for several files of one bucket: `(key, file)` pairs. A
    /// store on this machine's disk links them all and makes the new names durable with one
    /// sync of each folder; the default writes them one after another.
    async fn put_files(
        &self,
        bucket: &str,
        files: Vec<(String, std::path::PathBuf)>,
        content_type: &str,
    ) -> Result<(), StoreError> {
        for (key, source) in files {
            self.put_file(bucket, &key, &source, content_type).await?;
        }
        Ok(())
    }
    /// Reads the file at `source` now, which [`ObjectStore::put_files`] is about to place as
    /// `key`, and keeps its bytes for the first read of `key` in this process
    /// ([`ObjectStore::get_known`]); returns whether it kept them. `false`, the default:
    /// the file is read when the object is.
    ///
    /// `pixq process` reads its first input this way while the queue and the pack of a
    /// fresh home are still being made: the first kernel then starts as soon as its job
    /// arrives, rather than after a read and a hash that the wait could have held.
    async fn read_ahead(&self, _bucket: &str, _key: &str, _source: &std::path::Path) -> bool {
        false
    }
    /// [`ObjectStore::get_at_most`], with the object's content digest when the store knows
    /// it for exactly these bytes (bytes kept by [`ObjectStore::read_ahead`], hashed as they
    /// were read), so the caller need not hash them again.
    async fn get_known(&self, bucket: &str, key: &str, max: u64) -> Result<(Vec<u8>, Option<String>), StoreError> {
        Ok((self.get_at_most(bucket, key, max).await?, None))
    }
    /// Deletes several objects of one bucket (missing ones are not an error), in as few
    /// round trips or commits as the backend allows. Stops at the first error.
    async fn delete_many(&self, bucket: &str, keys: &[String]) -> Result<(), StoreError> {
        for k in keys {
            self.delete(bucket, k).await?;
        }
        Ok(())
    }
}
