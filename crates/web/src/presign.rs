//! Where clients send and fetch image bytes. Served by `pixq serve`, they pass through the
//! server (signed local URLs). On AWS a [`Presign`] gives presigned S3 URLs instead, so
//! image bytes never pass through the API function: uploads go straight to `inputs/`,
//! outputs and on-the-fly hits are redirects to presigned GETs.

use std::time::Duration;

use async_trait::async_trait;
use pixq_jobs::store::StoreError;

/// Presigned object URLs.
#[async_trait]
pub trait Presign: Send + Sync + std::fmt::Debug {
    /// A PUT of exactly `size` bytes to `key`, and the headers the client must send.
    async fn put(
        &self,
        bucket: &str,
        key: &str,
        size: u64,
        ttl: Duration,
    ) -> Result<(String, Vec<(String, String)>), StoreError>;
    /// A GET of `key`; with `download`, the browser saves it under that name.
    async fn get(&self, bucket: &str, key: &str, download: Option<&str>, ttl: Duration) -> Result<String, StoreError>;
    /// Writes `key` from a stream of chunks without holding it whole: an object the API
    /// makes itself that is too large for a function's response (a batch's ZIP), which the
    /// client then fetches on a presigned GET. Returns the bytes written.
    async fn put_stream(&self, bucket: &str, key: &str, content_type: &str, chunks: Chunks) -> Result<u64, StoreError>;
}

/// A stream of an object's bytes, chunk by chunk.
pub type Chunks = futures::stream::BoxStream<'static, Result<Vec<u8>, StoreError>>;

#[cfg(feature = "aws")]
#[async_trait]
impl Presign for pixq_jobs::store::s3::S3Store {
    async fn put(
        &self,
        bucket: &str,
        key: &str,
        size: u64,
        ttl: Duration,
    ) -> Result<(String, Vec<(String, String)>), StoreError> {
        self.presign_put_sized(bucket, key, size, ttl).await
    }

    async fn get(&self, bucket: &str, key: &str, download: Option<&str>, ttl: Duration) -> Result<String, StoreError> {
        match download {
            Some(name) => self.presign_download(bucket, key, name, ttl).await,
            None => self.presign_get(bucket, key, ttl).await,
        }
    }

    async fn put_stream(&self, bucket: &str, key: &str, content_type: &str, chunks: Chunks) -> Result<u64, StoreError> {
        pixq_jobs::store::s3::S3Store::put_stream(self, bucket, key, content_type, chunks).await
    }
}
