//! The batch API: create a batch (validated pipeline, counted and capped files, one signed
//! upload URL each), upload (sniffed, size-checked, hashed), start (one job per uploaded
//! file), follow (status, server-sent events), collect (each file, or all as a ZIP).
//!
//! A web batch is also an ordinary pixq batch once started: its manifest and records are
//! the ones `pixq status` and `pixq fetch` read.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use pixq_jobs::batch::{self, BatchManifest, ManifestEntry};
use pixq_jobs::clock::now_ms;
use pixq_jobs::kernel::{Format, Pipeline};
use pixq_jobs::schema::{JobResult, ObjectRef, OutputLocation, Status};
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
    body.map(|Json(v)| v)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("request body: {}", e.body_text())))
}

fn parse_pipeline(app: &App, text: &str) -> Result<Pipeline, ApiError> {
    if let Some(name) = text.trim().strip_prefix("preset:") {
        return app
            .config
            .presets
            .get(name)
            .cloned()
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
    let presets: serde_json::Map<_, _> =
        app.config.presets.iter().map(|(k, v)| (k.clone(), v.canonical().into())).collect();
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
struct WebBatch {
    batch: String,
    pipeline: String,
    created_at_ms: i64,
    files: Vec<WebFile>,
    #[serde(default)]
    started: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct WebFile {
    name: String,
    size: u64,
    key: String,
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

async fn read_web(app: &App, batch: &str) -> Result<WebBatch, ApiError> {
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
pub async fn upload(
    State(app): AppState,
    Path((batch, index)): Path<(String, usize)>,
    Query(q): Query<UploadQuery>,
    body: axum::body::Bytes,
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
    if body.len() as u64 > app.config.max_file_bytes {
        return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "over the size limit"));
    }
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
                "'{}' is not an image pixq reads (JPEG, PNG, WebP, GIF, TIFF, BMP; decided from its bytes)",
                f.name
            ),
        ));
    };
    let digest = keys::content_digest(&body);
    app.store.put(&app.bucket, &f.key, body.to_vec(), format.mime()).await.map_err(ApiError::store)?;
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
        let status = if e.is_transient() { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::INTERNAL_SERVER_ERROR };
        ApiError::new(status, format!("queue: {e}"))
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
    let ext = pipeline.output.format.map(|f| f.extension()).unwrap_or(input_ext);
    format!("{index:04}-{stem}.{ext}")
}

/// The files of a batch that were uploaded: once started, those with a job; before, those
/// with an upload marker (local) or an object (presigned S3 uploads).
async fn uploaded(app: &App, w: &WebBatch) -> Result<std::collections::HashSet<usize>, ApiError> {
    let batch = &w.batch;
    if w.started {
        let m = batch::read_manifest(app.store.as_ref(), &app.bucket, batch).await.map_err(ApiError::store)?;
        return Ok(m
            .map(|m| m.jobs.iter().filter_map(|e| e.job_id.rsplit('-').next().and_then(|n| n.parse().ok())).collect())
            .unwrap_or_default());
    }
    if app.config.presign.is_some() {
        let mut out = std::collections::HashSet::new();
        for (i, f) in w.files.iter().enumerate() {
            if app.store.head(&app.bucket, &f.key).await.map_err(ApiError::store)?.is_some() {
                out.insert(i);
            }
        }
        return Ok(out);
    }
    let marks = app.store.list(&app.bucket, &format!("batches/{batch}/uploaded/")).await.map_err(ApiError::store)?;
    Ok(marks.iter().filter_map(|m| m.key.rsplit('/').next().and_then(|n| n.parse().ok())).collect())
}

/// The result records of a batch. A successful record is final (a job id is done once;
/// only failed jobs are redriven), so it is read from the store once and then served from
/// memory while its size is unchanged; failed, provisional and unreadable ones are read
/// every time.
async fn batch_results(app: &App, batch: &str) -> Result<Vec<JobResult>, ApiError> {
    let listed = app.store.list(&app.bucket, &keys::results_prefix(batch)).await.map_err(ApiError::store)?;
    let mut out = Vec::with_capacity(listed.len());
    for m in listed {
        let known = app
            .records
            .lock()
            .expect("record cache")
            .get(&m.key)
            .filter(|(size, _)| *size == m.size)
            .map(|(_, r)| r.clone());
        if let Some(r) = known {
            out.push(r);
            continue;
        }
        let body = match app.store.get(&app.bucket, &m.key).await {
            Ok(b) => b,
            Err(StoreError::NotFound { .. }) => continue,
            Err(e) => return Err(ApiError::store(e)),
        };
        let Ok(r) = serde_json::from_slice::<JobResult>(&body) else { continue };
        if r.status == Status::Ok && !r.provisional {
            let mut cache = app.records.lock().expect("record cache");
            if cache.len() > 200_000 {
                cache.clear();
            }
            cache.insert(m.key, (m.size, r.clone()));
        }
        out.push(r);
    }
    Ok(out)
}

/// The status of a batch, as `GET /api/batches/{batch}` and the events send it.
async fn status_json(app: &App, batch: &str) -> Result<(serde_json::Value, bool), ApiError> {
    let w = read_web(app, batch).await?;
    let uploaded = uploaded(app, &w).await?;
    let results: HashMap<String, JobResult> = if w.started {
        batch_results(app, batch).await?.into_iter().filter(|r| !r.provisional).map(|r| (r.job_id.clone(), r)).collect()
    } else {
        HashMap::new()
    };
    let (mut ok, mut failed, mut pending, mut missing) = (0, 0, 0, 0);
    let files: Vec<_> = w
        .files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let job_id = format!("{batch}-{i:06}");
            let r = results.get(&job_id);
            let state = match (w.started, uploaded.contains(&i), r.map(|r| r.status)) {
                (false, false, _) => "waiting for upload",
                (false, true, _) => "uploaded",
                (true, false, _) => "missing",
                (true, true, None) => "queued",
                (true, true, Some(Status::Ok)) => "ok",
                (true, true, Some(_)) => "failed",
            };
            match state {
                "ok" => ok += 1,
                "failed" => failed += 1,
                "missing" => missing += 1,
                "queued" => pending += 1,
                _ => {}
            }
            let out = r.and_then(|r| r.outputs.first());
            serde_json::json!({
                "index": i,
                "name": f.name,
                "size": f.size,
                "status": state,
                "reason": r.and_then(|r| r.reason.clone()),
                "input_url": uploaded.contains(&i).then(|| format!("/api/batches/{batch}/files/{i}/input")),
                "output_url": out.map(|_| format!("/api/batches/{batch}/files/{i}/output")),
                "width": out.and_then(|o| o.width),
                "height": out.and_then(|o| o.height),
                "bytes": out.map(|o| o.bytes),
                "format": out.map(|o| o.format.extension()),
                "reused": r.map(|r| r.reused),
                "timings": r.map(|r| &r.timings),
            })
        })
        .collect();
    let done = w.started && pending == 0;
    let body = serde_json::json!({
        "batch": batch,
        "pipeline": w.pipeline,
        "started": w.started,
        "done": done,
        "counts": {"files": w.files.len(), "uploaded": uploaded.len(), "queued": pending, "ok": ok, "failed": failed, "missing": missing},
        "files": files,
        "zip_url": (ok > 0).then(|| format!("/api/batches/{batch}/zip")),
    });
    Ok((body, done))
}

/// `GET /api/batches/{batch}`.
pub async fn status(State(app): AppState, Path(batch): Path<String>) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(status_json(&app, &batch).await?.0))
}

/// `GET /api/batches/{batch}/events`: the status at once, then a `status` event whenever it
/// changes, then `done` (and the stream ends) when every started job has a record. A stream
/// also ends after the configured hold ([`crate::WebConfig::events_hold`]); its first event
/// asks the browser to reconnect a second later, so a client behind a buffering proxy (or
/// a Lambda function) still follows the batch, one status per connection.
pub async fn events(
    State(app): AppState,
    Path(batch): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    // An unknown batch is a 404 before the stream starts.
    let first = status_json(&app, &batch).await?;
    let until = app.config.events_hold.map(|h| tokio::time::Instant::now() + h);
    let state = (app, batch, Some(first), String::new(), false);
    let stream = futures::stream::unfold(state, move |(app, batch, mut ready, mut last, finished)| async move {
        if finished {
            return None;
        }
        loop {
            let first = last.is_empty();
            let (body, done) = match ready.take() {
                Some(r) => r,
                None => {
                    if until.is_some_and(|t| tokio::time::Instant::now() >= t) {
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    match status_json(&app, &batch).await {
                        Ok(r) => r,
                        Err(e) => {
                            let ev = Event::default().event("error").data(format!("{e:?}"));
                            return Some((Ok(ev), (app, batch, None, last, true)));
                        }
                    }
                }
            };
            let text = body.to_string();
            if done {
                let ev = Event::default().event("done").data(text);
                return Some((Ok(ev), (app, batch, None, last, true)));
            }
            if text != last {
                last = text.clone();
                let mut ev = Event::default().event("status").data(text);
                if first {
                    ev = ev.retry(Duration::from_secs(1));
                }
                return Some((Ok(ev), (app, batch, None, last, false)));
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// The result record of file `index`, and its manifest entry.
async fn file_result(app: &App, batch: &str, index: usize) -> Result<(ManifestEntry, Option<JobResult>), ApiError> {
    let _ = read_web(app, batch).await?;
    let m = batch::read_manifest(app.store.as_ref(), &app.bucket, batch)
        .await
        .map_err(ApiError::store)?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "the batch has not started"))?;
    let job_id = format!("{batch}-{index:06}");
    let entry = m
        .jobs
        .into_iter()
        .find(|e| e.job_id == job_id)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no such file in the batch"))?;
    let key = keys::result_key(batch, &job_id);
    let r = match app.store.get(&app.bucket, &key).await {
        Ok(b) => serde_json::from_slice::<JobResult>(&b).ok().filter(|r| !r.provisional),
        Err(StoreError::NotFound { .. }) => None,
        Err(e) => return Err(ApiError::store(e)),
    };
    Ok((entry, r))
}

/// Query of a file download.
#[derive(Deserialize)]
pub struct FileQuery {
    #[serde(default)]
    download: bool,
}

/// `GET /api/batches/{batch}/files/{index}/{input|output}[?download=true]`.
pub async fn file(
    State(app): AppState,
    Path((batch, index, which)): Path<(String, usize, String)>,
    Query(q): Query<FileQuery>,
) -> Result<Response, ApiError> {
    let (object, name) = match which.as_str() {
        "input" => {
            let w = read_web(&app, &batch).await?;
            let f =
                w.files.get(index).ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no such file in the batch"))?;
            (ObjectRef { bucket: app.bucket.clone(), key: f.key.clone() }, safe_name(&f.name))
        }
        "output" => {
            let (entry, r) = file_result(&app, &batch, index).await?;
            let out = r
                .filter(|r| r.status == Status::Ok)
                .and_then(|r| r.outputs.into_iter().next())
                .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no output (yet)"))?;
            (out.object, entry.output_name.unwrap_or_else(|| "output".into()))
        }
        _ => return Err(ApiError::new(StatusCode::NOT_FOUND, "input or output")),
    };
    if object.bucket != app.bucket {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "not in this server's bucket"));
    }
    keys::validate_key(&object.key).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    if let Some(p) = &app.config.presign {
        let url = p
            .get(&app.bucket, &object.key, q.download.then_some(name.as_str()), Duration::from_secs(3600))
            .await
            .map_err(ApiError::store)?;
        return Ok(redirect(&url, "private, max-age=300"));
    }
    let bytes = match app.store.get(&app.bucket, &object.key).await {
        Ok(b) => b,
        Err(e @ StoreError::NotFound { .. }) => return Err(ApiError::new(StatusCode::NOT_FOUND, format!("gone: {e}"))),
        Err(e) => return Err(ApiError::store(e)),
    };
    let mime = Format::sniff(&bytes).map(|f| f.mime()).unwrap_or("application/octet-stream");
    let mut r = Response::new(Body::from(bytes));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=3600"));
    if q.download {
        let v = format!("attachment; filename=\"{name}\"");
        h.insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_str(&v).unwrap_or(HeaderValue::from_static("attachment")),
        );
    }
    Ok(r)
}

/// `GET /api/batches/{batch}/zip`: every output of the batch, streamed file by file.
pub async fn zip(State(app): AppState, Path(batch): Path<String>) -> Result<Response, ApiError> {
    let _ = read_web(&app, &batch).await?;
    let m = batch::read_manifest(app.store.as_ref(), &app.bucket, &batch)
        .await
        .map_err(ApiError::store)?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "the batch has not started"))?;
    let st = batch::batch_status(app.store.as_ref(), &app.bucket, &batch).await.map_err(ApiError::store)?;
    let by_job: HashMap<&str, &JobResult> = st.results.iter().map(|r| (r.job_id.as_str(), r)).collect();
    let mut files = Vec::new();
    for e in &m.jobs {
        let Some(o) = by_job.get(e.job_id.as_str()).filter(|r| r.status == Status::Ok).and_then(|r| r.outputs.first())
        else {
            continue;
        };
        if o.object.bucket == app.bucket {
            files.push((e.output_name.clone().unwrap_or_else(|| e.job_id.clone()), o.object.key.clone()));
        }
    }
    if files.is_empty() {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "no outputs yet"));
    }
    let download = format!("{batch}.zip");
    if let Some(p) = &app.config.presign {
        // A function's response is capped (6 MB on Lambda) and buffered: the archive is
        // written to the bucket, keyed by what it holds, and fetched on a presigned GET.
        let key = zip_key(&batch, &files);
        if app.store.head(&app.bucket, &key).await.map_err(ApiError::store)?.is_none() {
            let chunks = crate::zip::chunks(app.store.clone(), app.bucket.clone(), files);
            p.put_stream(&app.bucket, &key, "application/zip", chunks).await.map_err(ApiError::store)?;
        }
        let url =
            p.get(&app.bucket, &key, Some(&download), Duration::from_secs(3600)).await.map_err(ApiError::store)?;
        return Ok(redirect(&url, "private, max-age=300"));
    }
    let body = crate::zip::stream(app.store.clone(), app.bucket.clone(), files);
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/zip"));
    let v = format!("attachment; filename=\"{download}\"");
    h.insert(header::CONTENT_DISPOSITION, HeaderValue::from_str(&v).unwrap_or(HeaderValue::from_static("attachment")));
    Ok(r)
}

/// Where a batch's ZIP of `files` is kept when it is written to the bucket (AWS): under
/// `zips/` (expired by the bucket's lifecycle), named by a digest of the archive's entries,
/// so a batch with more finished files gets a new archive and a repeated request reuses it.
fn zip_key(batch: &str, files: &[(String, String)]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (name, key) in files {
        h.update(name.as_bytes());
        h.update([0]);
        h.update(key.as_bytes());
        h.update([0]);
    }
    let d = h.finalize();
    let hex: String = d[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("zips/{batch}/{hex}.zip")
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
