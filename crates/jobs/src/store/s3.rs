//! S3 object store on aws-sdk-s3: HEAD before download, multipart above a threshold,
//! paginated listing, presigned URLs, optional server-side encryption.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, ServerSideEncryption};

use super::{ObjectMeta, ObjectStore, StoreError};
use crate::aws::{describe, is_transient};
use crate::keys::{validate_bucket, validate_key};

/// Objects at least this big are uploaded in parts.
pub const MULTIPART_THRESHOLD: usize = 16 * 1024 * 1024;
/// Part size of multipart uploads (S3 needs at least 5 MiB).
pub const PART_SIZE: usize = 8 * 1024 * 1024;

/// An S3-backed store.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    /// Server-side encryption requested on every put (`None`: the bucket default).
    sse: Option<ServerSideEncryption>,
}

fn err<E, R>(op: &'static str, key: &str, e: aws_smithy_runtime_api::client::result::SdkError<E, R>) -> StoreError
where
    E: std::error::Error + aws_smithy_types::error::metadata::ProvideErrorMetadata + 'static,
    R: crate::aws::HttpStatus + std::fmt::Debug,
{
    let msg = format!("S3 {op} {key}: {}", describe(&e));
    if is_transient(&e) { StoreError::Transient(msg) } else { StoreError::Permanent(msg) }
}

/// The type a presigned upload stores (and signs): bytes, nothing a browser renders.
pub const UPLOAD_TYPE: &str = "application/octet-stream";

impl S3Store {
    /// A store using `client`.
    pub fn new(client: aws_sdk_s3::Client) -> S3Store {
        S3Store { client, sse: None }
    }

    /// Requests SSE-S3 (AES256) or SSE-KMS (`aws:kms`) on every put.
    pub fn with_sse(mut self, sse: ServerSideEncryption) -> S3Store {
        self.sse = Some(sse);
        self
    }

    /// A presigned GET URL.
    pub async fn presign_get(&self, bucket: &str, key: &str, expires: Duration) -> Result<String, StoreError> {
        self.presign(bucket, key, expires, false).await
    }

    /// A presigned PUT URL (browsers upload straight to S3 with it).
    pub async fn presign_put(&self, bucket: &str, key: &str, expires: Duration) -> Result<String, StoreError> {
        self.presign(bucket, key, expires, true).await
    }

    /// A presigned PUT of exactly `content_length` bytes (S3 refuses any other size), and
    /// the headers the client must send besides `Content-Length` (which browsers set).
    /// The object's type is signed too, as `application/octet-stream`: the uploader cannot
    /// choose `text/html` or `image/svg+xml` and have the bucket serve a page (what the
    /// bytes are is sniffed by whoever reads them).
    pub async fn presign_put_sized(
        &self,
        bucket: &str,
        key: &str,
        content_length: u64,
        expires: Duration,
    ) -> Result<(String, Vec<(String, String)>), StoreError> {
        validate_bucket(bucket)?;
        validate_key(key)?;
        let cfg = aws_sdk_s3::presigning::PresigningConfig::expires_in(expires)
            .map_err(|e| StoreError::Permanent(format!("presign: {e}")))?;
        let len =
            i64::try_from(content_length).map_err(|_| StoreError::Permanent("presign: size out of range".into()))?;
        let req = self
            .client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_length(len)
            .content_type(UPLOAD_TYPE)
            .presigned(cfg)
            .await
            .map_err(|e| err("presign PUT", key, e))?;
        let headers = req
            .headers()
            .filter(|(k, _)| !k.eq_ignore_ascii_case("content-length") && !k.eq_ignore_ascii_case("host"))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Ok((req.uri().to_string(), headers))
    }

    /// A presigned GET that makes browsers save the object as `filename`.
    pub async fn presign_download(
        &self,
        bucket: &str,
        key: &str,
        filename: &str,
        expires: Duration,
    ) -> Result<String, StoreError> {
        validate_bucket(bucket)?;
        validate_key(key)?;
        let cfg = aws_sdk_s3::presigning::PresigningConfig::expires_in(expires)
            .map_err(|e| StoreError::Permanent(format!("presign: {e}")))?;
        let safe: String = filename.chars().filter(|c| c.is_ascii_graphic() && *c != '"' && *c != '\\').collect();
        let req = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .response_content_disposition(format!("attachment; filename=\"{safe}\""))
            .presigned(cfg)
            .await
            .map_err(|e| err("presign GET", key, e))?;
        Ok(req.uri().to_string())
    }

    async fn presign(&self, bucket: &str, key: &str, expires: Duration, put: bool) -> Result<String, StoreError> {
        validate_bucket(bucket)?;
        validate_key(key)?;
        let cfg = aws_sdk_s3::presigning::PresigningConfig::expires_in(expires)
            .map_err(|e| StoreError::Permanent(format!("presign: {e}")))?;
        let req = if put {
            self.client
                .put_object()
                .bucket(bucket)
                .key(key)
                .presigned(cfg)
                .await
                .map_err(|e| err("presign PUT", key, e))?
        } else {
            self.client
                .get_object()
                .bucket(bucket)
                .key(key)
                .presigned(cfg)
                .await
                .map_err(|e| err("presign GET", key, e))?
        };
        Ok(req.uri().to_string())
    }

    /// One PUT of the whole body.
    async fn put_one(&self, bucket: &str, key: &str, body: Vec<u8>, content_type: &str) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type(content_type)
            .set_server_side_encryption(self.sse.clone())
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| err("PUT", key, e))?;
        Ok(())
    }

    async fn put_multipart(
        &self,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> Result<(), StoreError> {
        let parts = futures::stream::iter(body.chunks(PART_SIZE).map(|c| Ok(c.to_vec())));
        self.put_stream(bucket, key, content_type, parts).await.map(|_| ())
    }

    /// Writes `key` from a stream of chunks without ever holding the whole object: a
    /// multipart upload in parts of at least [`PART_SIZE`], or one PUT when everything fits
    /// in a part. Returns the bytes written. On any error (from the stream or S3) the upload
    /// is aborted, so no billed parts stay behind and no partial object appears.
    pub async fn put_stream<S>(&self, bucket: &str, key: &str, content_type: &str, chunks: S) -> Result<u64, StoreError>
    where
        S: futures::Stream<Item = Result<Vec<u8>, StoreError>> + Send,
    {
        use futures::StreamExt;
        validate_bucket(bucket)?;
        validate_key(key)?;
        let mut chunks = std::pin::pin!(chunks);
        let mut buf: Vec<u8> = Vec::new();
        let mut total = 0u64;
        // Until a part is full, nothing is sent: a small object is one PUT.
        loop {
            match chunks.next().await {
                Some(c) => {
                    let c = c?;
                    total += c.len() as u64;
                    buf.extend_from_slice(&c);
                    if buf.len() >= PART_SIZE {
                        break;
                    }
                }
                None => {
                    self.put_one(bucket, key, buf, content_type).await?;
                    return Ok(total);
                }
            }
        }
        let created = self
            .client
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .content_type(content_type)
            .set_server_side_encryption(self.sse.clone())
            .send()
            .await
            .map_err(|e| err("create multipart upload", key, e))?;
        let upload_id = created.upload_id().unwrap_or_default().to_string();
        let mut parts = Vec::new();
        let result: Result<(), StoreError> = async {
            let mut ended = false;
            while !ended {
                while buf.len() < PART_SIZE {
                    match chunks.next().await {
                        Some(c) => {
                            let c = c?;
                            total += c.len() as u64;
                            buf.extend_from_slice(&c);
                        }
                        None => {
                            ended = true;
                            break;
                        }
                    }
                }
                if buf.is_empty() {
                    break;
                }
                let n = parts.len() as i32 + 1;
                let out = self
                    .client
                    .upload_part()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .part_number(n)
                    .body(ByteStream::from(std::mem::take(&mut buf)))
                    .send()
                    .await
                    .map_err(|e| err("upload part", key, e))?;
                parts.push(CompletedPart::builder().part_number(n).set_e_tag(out.e_tag().map(String::from)).build());
            }
            self.client
                .complete_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(&upload_id)
                .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
                .send()
                .await
                .map_err(|e| err("complete multipart upload", key, e))?;
            Ok(())
        }
        .await;
        if result.is_err() {
            // Do not leave billed parts behind; the bucket's lifecycle rule is the backstop.
            let _ = self.client.abort_multipart_upload().bucket(bucket).key(key).upload_id(&upload_id).send().await;
        }
        result.map(|_| total)
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn head(&self, bucket: &str, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        validate_bucket(bucket)?;
        validate_key(key)?;
        match self.client.head_object().bucket(bucket).key(key).send().await {
            Ok(o) => Ok(Some(ObjectMeta {
                key: key.to_string(),
                size: o.content_length().unwrap_or(0).max(0) as u64,
                etag: o.e_tag().map(|t| t.trim_matches('"').to_string()),
            })),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
            Err(e) => Err(err("HEAD", key, e)),
        }
    }

    async fn get(&self, bucket: &str, key: &str) -> Result<Vec<u8>, StoreError> {
        self.get_at_most(bucket, key, u64::MAX).await
    }

    async fn get_at_most(&self, bucket: &str, key: &str, max: u64) -> Result<Vec<u8>, StoreError> {
        validate_bucket(bucket)?;
        validate_key(key)?;
        let mut out = match self.client.get_object().bucket(bucket).key(key).send().await {
            Ok(o) => o,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                return Err(StoreError::NotFound { bucket: bucket.into(), key: key.into() });
            }
            Err(e) => return Err(err("GET", key, e)),
        };
        let too_large = || StoreError::TooLarge { key: key.to_string(), max };
        // The length the response announces, then every chunk as it comes: a larger body is
        // dropped with the connection, not read to its end.
        let announced = out.content_length.and_then(|n| u64::try_from(n).ok()).unwrap_or(0);
        if announced > max {
            return Err(too_large());
        }
        let mut body = Vec::with_capacity(usize::try_from(announced).unwrap_or(0));
        while let Some(chunk) = out
            .body
            .try_next()
            .await
            .map_err(|e| StoreError::Transient(format!("S3 GET {key}: reading the body: {e}")))?
        {
            if (body.len() + chunk.len()) as u64 > max {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    async fn put(&self, bucket: &str, key: &str, body: Vec<u8>, content_type: &str) -> Result<(), StoreError> {
        validate_bucket(bucket)?;
        validate_key(key)?;
        if body.len() >= MULTIPART_THRESHOLD {
            return self.put_multipart(bucket, key, body, content_type).await;
        }
        self.put_one(bucket, key, body, content_type).await
    }

    async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        validate_bucket(bucket)?;
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(bucket)
                .prefix(prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| err("LIST", prefix, e))?;
            for o in page.contents() {
                if let Some(k) = o.key() {
                    out.push(ObjectMeta {
                        key: k.to_string(),
                        size: o.size().unwrap_or(0).max(0) as u64,
                        etag: o.e_tag().map(|t| t.trim_matches('"').to_string()),
                    });
                }
            }
            match (page.is_truncated(), page.next_continuation_token()) {
                (Some(true), Some(t)) => token = Some(t.to_string()),
                _ => break,
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
        validate_bucket(bucket)?;
        validate_key(key)?;
        self.client.delete_object().bucket(bucket).key(key).send().await.map_err(|e| err("DELETE", key, e))?;
        Ok(())
    }

    async fn delete_many(&self, bucket: &str, keys: &[String]) -> Result<(), StoreError> {
        use aws_sdk_s3::types::{Delete, ObjectIdentifier};
        validate_bucket(bucket)?;
        for k in keys {
            validate_key(k)?;
        }
        // DeleteObjects takes at most 1,000 keys per request.
        for chunk in keys.chunks(1000) {
            let first = chunk.first().map(String::as_str).unwrap_or_default();
            let objects = chunk
                .iter()
                .map(|k| ObjectIdentifier::builder().key(k).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| StoreError::Permanent(format!("DELETE {first}: {e}")))?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| StoreError::Permanent(format!("DELETE {first}: {e}")))?;
            let out = self
                .client
                .delete_objects()
                .bucket(bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| err("DELETE", first, e))?;
            if let Some(e) = out.errors().first() {
                let key = e.key().unwrap_or(first);
                let what = format!("{}: {}", e.code().unwrap_or("error"), e.message().unwrap_or_default());
                return Err(StoreError::Transient(format!("DELETE {key}: {what}")));
            }
        }
        Ok(())
    }
}
