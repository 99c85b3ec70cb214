//! The batch API, writing side: the step list and live validation, create a batch
//! (validated pipeline, counted and capped files, one signed upload URL each), upload
//! (sniffed, size-checked, hashed), start (one job per uploaded file). Following and
//! collecting a batch (status, events, files, ZIP) is in `results.rs`.
//!
//! A web batch is also an ordinary pixq batch once started: its manifest and records are
//! the ones `pixq status` and `pixq fetch` read.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pixq_jobs::batch::{self, BatchManifest, ManifestEntry};
use pixq_jobs::clock::now_ms;
use pixq_jobs::kernel::{Format, Pipeline};
use pixq_jobs::schema::{ObjectRef, OutputLocation};
use pixq_jobs::store::StoreError;
use pixq_jobs::{ids, keys};
use serde::{Deserialize, Serialize};

use crate::{ApiError, App};

type AppState = State<Arc<App>>;

/// Checks `Authorization: Bearer KEY` when the server has an API key.
fn authorize(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(want) = &app.config.api_key else { return Ok(()) };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    // Compare in constant time: through the signer, which hashes both alike.
    let ok = app.config.signer.sign(&[b"api-key", given.as_bytes()])
        == app.config.signer.sign(&[b"api-key", want.as_bytes()]);
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(StatusCode::UNAUTHORIZED, "missing or wrong API key (Authorization: Bearer KEY)"))
    }
}

fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    // 413 over the body limit, 415 not JSON, 400 for JSON that does not parse or fit.
    body.map(|Json(v)| v).map_err(|e| {
        let status = match e.status() {
            s @ (StatusCode::PAYLOAD_TOO_LARGE | StatusCode::UNSUPPORTED_MEDIA_TYPE) => s,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, format!("request body: {}", e.body_text()))
    })
}

fn parse_pipeline(app: &App, text: &str) -> Result<Pipeline, ApiError> {
    if let Some(name) = text.trim().strip_prefix("preset:") {
        return app
            .config
            .presets
            .get(name)
            // A batch has no Accept header: `format:auto` keeps each input's format.
            .map(|p| p.pipeline(false).clone())
            .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, format!("unknown preset '{name}'")));
    }
    Pipeline::parse(text).map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, e.to_string())
            .with("step", e.step.into())
            .with("reason", e.reason.clone().into())
    })
}

/// `GET /api/ops`: every step with its syntax, help and example, and the presets.
pub async fn ops(State(app): AppState) -> Json<serde_json::Value> {
    let steps: Vec<_> = pixq_jobs::kernel::op::STEPS
        .iter()
        .map(|s| serde_json::json!({"name": s.name(), "syntax": s.syntax, "about": s.about, "example": s.example}))
        .collect();
    let presets: serde_json::Map<_, _> = app.config.presets.iter().map(|(k, v)| (k.clone(), v.text().into())).collect();
    Json(serde_json::json!({ "steps": steps, "presets": presets, "presets_only": app.config.presets_only }))
}

/// Body of `POST /api/validate`.
#[derive(Deserialize)]
pub struct ValidateBody {
    pipeline: String,
}

/// `POST /api/validate`: the parser's verdict (200 with the canonical form, or 400 naming
/// the step).
pub async fn validate(
    State(app): AppState,
    body: Result<Json<ValidateBody>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let b = json_body(body)?;
    let p = parse_pipeline(&app, &b.pipeline)?;
    Ok(Json(serde_json::json!({ "canonical": p.canonical(), "steps": p.ops.len() })))
}

/// One file announced by `POST /api/batches`.
#[derive(Deserialize)]
pub struct FileIn {
    name: String,
    size: u64,
    #[serde(default, rename = "type")]
    _type: Option<String>,
}

/// Body of `POST /api/batches`.
#[derive(Deserialize)]
pub struct CreateBody {
    pipeline: String,
    files: Vec<FileIn>,
}

/// What the server keeps about a web batch (`batches/{batch}/web.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct WebBatch {
    pub(crate) batch: String,
    pub(crate) pipeline: String,
    created_at_ms: i64,
    pub(crate) files: Vec<WebFile>,
    #[serde(default)]
    pub(crate) started: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct WebFile {
    pub(crate) name: String,
    pub(crate) size: u64,
    pub(crate) key: String,
}

fn web_key(batch: &str) -> String {
    format!("batches/{batch}/web.json")
}

fn uploaded_key(batch: &str, index: usize) -> String {
    format!("batches/{batch}/uploaded/{index:06}")
}

/// A file name reduced to what is safe in a key and a download name: letters, digits,
/// `.`, `-`, `_` (others become `_`), no leading dot, at most 100 bytes; never empty.
pub fn safe_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let mut s: String = base
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' { c } else { '_' })
        .collect();
    while s.starts_with('.') {
        s.remove(0);
    }
    s.truncate(100);
    if s.is_empty() { "file".into() } else { s }
}

fn upload_sig(app: &App, batch: &str, index: usize, expires: i64) -> String {
    app.config.signer.sign(&[b"upload", batch.as_bytes(), index.to_string().as_bytes(), expires.to_string().as_bytes()])
}

pub(crate) async fn read_web(app: &App, batch: &str) -> Result<WebBatch, ApiError> {
    keys::validate_id("batch id", batch).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    // One read: a missing record is an unknown batch (every status poll comes through here).
    let body = match app.store.get(&app.bucket, &web_key(batch)).await {
        Ok(b) => b,
        Err(StoreError::NotFound { .. }) => {
            return Err(ApiError::new(StatusCode::NOT_FOUND, format!("unknown batch {batch}")));
        }
        Err(e) => return Err(ApiError::store(e)),
    };
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("batch record: {e}")))
}

async fn write_web(app: &App, w: &WebBatch) -> Result<(), ApiError> {
    let body = serde_json::to_vec(w).expect("a batch record serialises");
    app.store.put(&app.bucket, &web_key(&w.batch), body, "application/json").await.map_err(ApiError::store)
}

/// `POST /api/batches`: 201 with one upload URL per file.
pub async fn create(
    State(app): AppState,
    headers: HeaderMap,
    body: Result<Json<CreateBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    authorize(&app, &headers)?;
    let b = json_body(body)?;
    let pipeline = parse_pipeline(&app, &b.pipeline)?;
    let c = &app.config;
    if b.files.is_empty() {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "no files"));
    }
    if b.files.len() > c.max_files {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{} files, at most {} per batch", b.files.len(), c.max_files),
        ));
    }
    if let Some(f) = b.files.iter().find(|f| f.size > c.max_file_bytes) {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("'{}' is {} bytes, over the limit of {} bytes", safe_name(&f.name), f.size, c.max_file_bytes),
        ));
    }
    if let Some(f) = b.files.iter().find(|f| f.size == 0) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, format!("'{}' is empty", safe_name(&f.name))));
    }
    // Time-sortable and unguessable: the batch id is what lets a client read the batch.
    let batch = format!("{}{}", ids::new_batch_id(), &ids::random_hex(1)[..12]);
    let expires = now_ms() / 1000 + c.upload_ttl.as_secs() as i64;
    let files: Vec<WebFile> = b
        .files
        .iter()
        .enumerate()
        .map(|(i, f)| WebFile {
            name: f.name.chars().take(200).collect(),
            size: f.size,
            key: format!("{}{i:04}-{}", keys::inputs_prefix(&batch), safe_name(&f.name)),
        })
        .collect();
    let w = WebBatch {
        batch: batch.clone(),
        pipeline: pipeline.canonical(),
        created_at_ms: now_ms(),
        files,
        started: false,
    };
    write_web(&app, &w).await?;
    let mut uploads = Vec::with_capacity(w.files.len());
    for (i, f) in w.files.iter().enumerate() {
        let (url, headers) = match &c.presign {
            // Straight to S3, exactly the announced size; the worker sniffs the bytes.
            Some(p) => p.put(&app.bucket, &f.key, f.size, c.upload_ttl).await.map_err(ApiError::store)?,
            None => {
                let sig = upload_sig(&app, &batch, i, expires);
                (format!("/api/uploads/{batch}/{i}?expires={expires}&sig={sig}"), Vec::new())
            }
        };
        let headers: serde_json::Map<String, serde_json::Value> =
            headers.into_iter().map(|(k, v)| (k, v.into())).collect();
        uploads.push(serde_json::json!({ "name": f.name, "url": url, "method": "PUT", "headers": headers }));
    }
    let body = serde_json::json!({ "batch": batch, "pipeline": w.pipeline, "uploads": uploads, "expires": expires });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// Query of an upload URL.
#[derive(Deserialize)]
pub struct UploadQuery {
    expires: Option<i64>,
    sig: Option<String>,
}

/// `PUT /api/uploads/{batch}/{index}?expires&sig`: the local stand-in for a presigned PUT.
///
/// Nothing of the body is read before the URL's signature, its expiry and the batch are
/// checked; then at most the announced size (and one byte more, to tell a longer body) is
/// read, within the upload memory budget (`WebConfig::upload_memory_mb`, waited for) and
/// `WebConfig::upload_timeout` for the wait and the read together.
pub async fn upload(
    State(app): AppState,
    Path((batch, index)): Path<(String, usize)>,
    Query(q): Query<UploadQuery>,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let (Some(expires), Some(sig)) = (q.expires, q.sig) else {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "upload URL without a signature"));
    };
    if !app
        .config
        .signer
        .verify(&[b"upload", batch.as_bytes(), index.to_string().as_bytes(), expires.to_string().as_bytes()], &sig)
    {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "upload URL signature does not match"));
    }
    if expires < now_ms() / 1000 {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "upload URL expired"));
    }
    let w = read_web(&app, &batch).await?;
    if w.started {
        return Err(ApiError::new(StatusCode::CONFLICT, "the batch has started; uploads are closed"));
    }
    let f = w.files.get(index).ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no such file in the batch"))?;
    if f.size > app.config.max_file_bytes {
        return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "over the size limit"));
    }
    let announced = usize::try_from(f.size).unwrap_or(usize::MAX);
    let read = async {
        let held = app.upload_budget.hold(f.size).await;
        (axum::body::to_bytes(body, announced.saturating_add(1)).await, held)
    };
    let (body, _held) = match tokio::time::timeout(app.config.upload_timeout, read).await {
        Err(_) => return Err(ApiError::new(StatusCode::REQUEST_TIMEOUT, "the upload took too long")),
        Ok((Err(_), _)) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("'{}' was announced as {} bytes; more arrived, or the body broke off", f.name, f.size),
            ));
        }
        Ok((Ok(bytes), held)) => (bytes, held),
    };
    if body.len() as u64 != f.size {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("'{}' was announced as {} bytes, {} arrived", f.name, f.size, body.len()),
        ));
    }
    let Some(format) = Format::sniff(&body) else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "'{}' is not an image pixq reads (JPEG, PNG, WebP, GIF, TIFF, BMP, AVIF, HEIC; decided from its bytes)",
                f.name
            ),
        ));
    };
    // Hashing up to the size limit is CPU work: off the async threads.
    let hashed = body.clone();
    let digest = tokio::task::spawn_blocking(move || keys::content_digest(&hashed))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("hashing the upload: {e}")))?;
    app.store.put(&app.bucket, &f.key, Vec::from(body), format.mime()).await.map_err(ApiError::store)?;
    app.store
        .put(
            &app.bucket,
            &uploaded_key(&batch, index),
            format!("{digest} {}", format.extension()).into_bytes(),
            "text/plain",
        )
        .await
        .map_err(ApiError::store)?;
    Ok(Json(serde_json::json!({ "name": f.name, "bytes": f.size, "format": format.extension(), "digest": digest }))
        .into_response())
}

/// `POST /api/batches/{batch}/start`: 202; one job per uploaded file, the others reported.
pub async fn start(State(app): AppState, Path(batch): Path<String>, headers: HeaderMap) -> Result<Response, ApiError> {
    authorize(&app, &headers)?;
    // Two starts of one batch in this process: the second sees the first's `started`.
    // (Across function instances on AWS they can still race: each job would then be
    // queued twice, and its second run finds the first's output.)
    let _one = app.starting.lock().await;
    let mut w = read_web(&app, &batch).await?;
    if w.started {
        return Err(ApiError::new(StatusCode::CONFLICT, "the batch has already started"));
    }
    let pipeline =
        Pipeline::parse(&w.pipeline).map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let marks = app.store.list(&app.bucket, &format!("batches/{batch}/uploaded/")).await.map_err(ApiError::store)?;
    // Each upload left "<digest> <extension>": the digest lets workers check the bytes
    // they read, the sniffed extension names an output that keeps the input's format.
    let mut digests: HashMap<usize, (Option<String>, String)> = HashMap::new();
    if app.config.presign.is_some() {
        // Uploaded straight to S3: present at the announced size (S3 enforced it).
        for (i, f) in w.files.iter().enumerate() {
            if let Some(m) = app.store.head(&app.bucket, &f.key).await.map_err(ApiError::store)?
                && m.size == f.size
            {
                let ext =
                    safe_name(&f.name).rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or("img".into());
                digests.insert(i, (None, ext));
            }
        }
    }
    for m in marks {
        let Some(i) = m.key.rsplit('/').next().and_then(|n| n.parse::<usize>().ok()) else { continue };
        let d = app.store.get(&app.bucket, &m.key).await.map_err(ApiError::store)?;
        let d = String::from_utf8_lossy(&d).into_owned();
        let (digest, ext) = d.split_once(' ').unwrap_or((&d, "img"));
        digests.insert(i, (Some(digest.to_string()), ext.to_string()));
    }
    let output = OutputLocation { bucket: app.bucket.clone(), prefix: "outputs/".into() };
    let (mut jobs, mut entries, mut missing) = (Vec::new(), Vec::new(), Vec::new());
    for (i, f) in w.files.iter().enumerate() {
        let Some((d, ext)) = digests.get(&i) else {
            missing.push(f.name.clone());
            continue;
        };
        let input = ObjectRef { bucket: app.bucket.clone(), key: f.key.clone() };
        let job = batch::new_job(&batch, i, input.clone(), d.clone(), &pipeline, &output);
        entries.push(ManifestEntry {
            variant_files: Vec::new(),
            job_id: job.id.clone(),
            source: f.name.clone(),
            input,
            output_name: Some(output_name(&f.name, &pipeline, ext, i)),
        });
        jobs.push(job);
    }
    let manifest = BatchManifest {
        batch: batch.clone(),
        pipeline: w.pipeline.clone(),
        created_at_ms: w.created_at_ms,
        jobs: entries,
    };
    batch::write_manifest(app.store.as_ref(), &app.bucket, &manifest).await.map_err(ApiError::store)?;
    w.started = true;
    write_web(&app, &w).await?;
    batch::enqueue(app.queue.as_ref(), &jobs, app.queue.is_fifo()).await.map_err(|e| {
        // The cause goes to the log: its text can name local paths or the queue's URL
        // (the account id), which are not the client's to see.
        tracing::warn!(error = %e, batch = %batch, "queueing a web batch");
        let (status, said) = if e.is_transient() {
            (StatusCode::SERVICE_UNAVAILABLE, "the queue is unavailable; try again")
        } else {
            (StatusCode::INTERNAL_SERVER_ERROR, "queue error")
        };
        ApiError::new(status, said)
    })?;
    let body = serde_json::json!({ "batch": batch, "jobs": jobs.len(), "missing": missing });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// The download name of an output: its index (names in a batch may repeat), the input's
/// safe stem, and the output's extension (the pipeline's format, else the input's sniffed
/// one).
fn output_name(name: &str, pipeline: &Pipeline, input_ext: &str, index: usize) -> String {
    let safe = safe_name(name);
    let stem = safe.rsplit_once('.').map(|(s, _)| s).filter(|s| !s.is_empty()).unwrap_or(&safe);
    let input = input_ext.parse::<Format>().ok().map(|f| f.default_output().extension());
    let ext = pipeline.output.format.map(|f| f.extension()).or(input).unwrap_or(input_ext);
    format!("{index:04}-{stem}.{ext}")
}

/// A 302 to `url` (a presigned S3 URL), cacheable as `cache`.
pub(crate) fn redirect(url: &str, cache: &'static str) -> Response {
    let mut r = StatusCode::FOUND.into_response();
    if let Ok(v) = HeaderValue::from_str(url) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_safe() {
        assert_eq!(safe_name("../../etc/passwd"), "passwd");
        assert_eq!(safe_name("C:\\Users\\me\\photo 1.JPG"), "photo_1.JPG");
        assert_eq!(safe_name("...hidden"), "hidden");
        assert_eq!(safe_name(""), "file");
        assert_eq!(safe_name("über\u{0}\n.png"), "_ber__.png");
        assert_eq!(safe_name(&"a".repeat(300)).len(), 100);
        let p = Pipeline::parse("thumbnail:10,format:webp").unwrap();
        assert_eq!(output_name("x/My Photo.jpeg", &p, "jpg", 3), "0003-My_Photo.webp");
        assert_eq!(output_name("really-a.png.jpg", &Pipeline::default(), "png", 0), "0000-really-a.png.png");
    }
}
