//! On-the-fly images: `GET /img/{signature}/{pipeline}/{key}[?expires=T]`, answered from
//! pixq's content-addressed outputs. The signature ([`crate::sign`]) covers the pipeline (or
//! `preset:NAME`), the key and the expiry; the key is looked up under the configured prefix
//! and can never leave it. A hit is served with a year-long `Cache-Control`, an `ETag` (the
//! output digest) and 304 on `If-None-Match`; a miss renders in the request when the
//! source is small enough, else it is queued (202, `Retry-After`). `format:auto` picks WebP
//! when the request's `Accept` allows it (and says `Vary: Accept`).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pixq_jobs::clock::now_ms;
use pixq_jobs::kernel::{Format, KERNEL_VERSION, Pipeline};
use pixq_jobs::keys;
use pixq_jobs::process::Outcome;
use pixq_jobs::schema::{Job, ObjectRef, OutputLocation, SCHEMA_VERSION};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::{ApiError, App};

/// Where on-the-fly outputs and their records go.
const BATCH: &str = "img";

/// Query of an image URL.
#[derive(Deserialize)]
pub struct ImgQuery {
    expires: Option<i64>,
}

/// Resolves the pipeline text of a URL: a preset or a pipeline, with `format:auto`
/// decided from `Accept`. Returns the pipeline and whether the answer varies by `Accept`.
fn resolve(app: &App, text: &str, accept: &str) -> Result<(Pipeline, bool), ApiError> {
    let webp = accept.split(',').any(|t| t.trim().split(';').next().unwrap_or_default().trim() == "image/webp");
    if let Some(name) = text.strip_prefix("preset:") {
        let p = app
            .config
            .presets
            .get(name)
            .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("unknown preset '{name}'")))?;
        return Ok((p.pipeline(webp).clone(), p.is_auto()));
    }
    if app.config.presets_only {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "this server takes presets only (preset:NAME)"));
    }
    let (text, vary) = decide_auto(text, webp);
    let p = Pipeline::parse(&text).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    Ok((p, vary))
}

/// `format:auto` becomes `format:webp` when the client takes WebP and is dropped (the
/// input's format is kept) otherwise; also says whether there was one.
pub fn decide_auto(text: &str, webp: bool) -> (String, bool) {
    let mut auto = false;
    let steps: Vec<&str> = text
        .split(',')
        .filter_map(|s| {
            if s.trim().eq_ignore_ascii_case("format:auto") {
                auto = true;
                webp.then_some("format:webp")
            } else {
                Some(s)
            }
        })
        .collect();
    (steps.join(","), auto)
}

/// Checks the pipeline text of an image URL as the server will read it (a preset name is
/// checked by the server, which has the presets).
pub fn check_pipeline(text: &str) -> Result<(), String> {
    if text.trim().starts_with("preset:") {
        return Ok(());
    }
    for webp in [false, true] {
        Pipeline::parse(&decide_auto(text, webp).0).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// `GET /img/{sig}/{pipeline}/{*key}`. An answer to a URL that expires is cached no longer
/// than the URL lives (and not as `immutable`): a cache must not serve it past its expiry.
pub async fn image(
    State(app): State<Arc<App>>,
    Path((sig, pipeline_text, key)): Path<(String, String, String)>,
    Query(q): Query<ImgQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let expires = q.expires;
    let mut r = answer(app, sig, pipeline_text, key, q, headers).await?;
    if let Some(t) = expires {
        let left = u64::try_from(t.saturating_sub(now_ms() / 1000)).unwrap_or(0);
        let h = r.headers_mut();
        let cached = h.get(header::CACHE_CONTROL).and_then(|v| v.to_str().ok()).and_then(|v| {
            let scope = if v.starts_with("private") { "private" } else { "public" };
            let age = v.split(',').find_map(|d| d.trim().strip_prefix("max-age=")?.parse::<u64>().ok())?;
            Some(format!("{scope}, max-age={}", age.min(left)))
        });
        if let Some(v) = cached.and_then(|v| HeaderValue::from_str(&v).ok()) {
            h.insert(header::CACHE_CONTROL, v);
        }
    }
    Ok(r)
}

async fn answer(
    app: Arc<App>,
    sig: String,
    pipeline_text: String,
    key: String,
    q: ImgQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if !app.config.signer.verify_img(&pipeline_text, &key, q.expires, &sig) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "bad signature"));
    }
    if let Some(e) = q.expires
        && e < now_ms() / 1000
    {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "expired"));
    }
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let (pipeline, vary) = resolve(&app, &pipeline_text, accept)?;
    // The key stays under the prefix: no absolute, empty, `.` or `..` segments, no control
    // characters (a signed URL is trusted to name a key, not to escape).
    keys::validate_key(&key).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    let source_key = format!("{}{key}", app.config.img_prefix);
    keys::validate_key(&source_key).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    let Some(meta) = app.store.head(&app.bucket, &source_key).await.map_err(ApiError::store)? else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("no image '{key}'")));
    };
    let input_digest = source_digest(&app, &source_key, &meta).await?;
    let canonical = pipeline.canonical();
    let out_digest = keys::output_digest(&input_digest, &canonical, KERNEL_VERSION);
    let etag = format!("\"{out_digest}\"");
    if let Some(key) = existing(&app, &out_digest, pipeline.output.format).await? {
        if headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim() == etag))
        {
            return Ok(with_cache(StatusCode::NOT_MODIFIED.into_response(), &etag, vary));
        }
        return deliver(&app, &key, &etag, vary).await;
    }
    let job = Job {
        schema: SCHEMA_VERSION,
        id: format!("{BATCH}-{}", &out_digest[..24]),
        batch: BATCH.into(),
        input: ObjectRef { bucket: app.bucket.clone(), key: source_key },
        input_digest: Some(input_digest),
        pipeline,
        variants: Vec::new(),
        output: OutputLocation { bucket: app.bucket.clone(), prefix: "outputs/".into() },
        submitted_at_ms: now_ms(),
        forwarded: None,
    };
    if meta.size > app.config.inline_max_bytes {
        // One job per output while it is being made: repeated requests for it (a page
        // reloading, a client looping) wait for the same job instead of queueing more.
        if app.first_request_for(&job.id) {
            let sent =
                pixq_jobs::batch::enqueue(app.queue.as_ref(), std::slice::from_ref(&job), app.queue.is_fifo()).await;
            if let Err(e) = sent {
                app.queued.lock().expect("queued jobs").remove(&job.id);
                tracing::warn!(error = %e, job = %job.id, "queueing an on-the-fly image");
                return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the queue is unavailable; try again"));
            }
        }
        let mut r =
            (StatusCode::ACCEPTED, axum::Json(serde_json::json!({"status": "queued", "job": job.id}))).into_response();
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        return Ok(r);
    }
    let cfg =
        pixq_jobs::process::ProcessConfig { allowed_buckets: vec![app.bucket.clone()], ..app.config.process.clone() };
    match pixq_jobs::process::process(&job, 1, app.store.as_ref(), &cfg, &app.admission, &CancellationToken::new())
        .await
    {
        Outcome::Done(r) => {
            let o = r.outputs.first().ok_or_else(|| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "no output"))?;
            deliver(&app, &o.object.key, &etag, vary).await
        }
        Outcome::Poison(reason) => Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, reason)),
        // The web API's config forwards nothing (it renders small images only), so this is
        // a job it will not render; said as the retryable refusal it is.
        Outcome::Retry(reason) | Outcome::Forward(reason) => {
            Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, reason))
        }
        Outcome::Released => Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "stopped")),
    }
}

/// An output: its bytes, or on AWS a redirect to a presigned GET (the bytes never pass
/// through the function; the redirect is cached for less than the URL lives).
async fn deliver(app: &App, key: &str, etag: &str, vary: bool) -> Result<Response, ApiError> {
    if let Some(p) = &app.config.presign {
        let url = p.get(&app.bucket, key, None, std::time::Duration::from_secs(3600)).await.map_err(ApiError::store)?;
        let mut r = crate::api::redirect(&url, "public, max-age=600");
        if let Ok(v) = HeaderValue::from_str(etag) {
            r.headers_mut().insert(header::ETAG, v);
        }
        if vary {
            r.headers_mut().insert(header::VARY, HeaderValue::from_static("Accept"));
        }
        return Ok(r);
    }
    // Found a moment ago: gone now only if removed meanwhile.
    let held = crate::download::read(app, key).await.map_err(|e| e.answer("the image is gone; ask again"))?;
    Ok(image_response(held, etag, vary))
}

/// The source's content digest, cached by key, size and tag (the store's ETag, or its
/// version tag: the filesystem store's file identity), so a hit reads no source. A miss
/// reads the source whole and hashes it, one read per source at a time (the others wait
/// and find the digest) and within [`crate::SOURCE_MEMORY_MB`] for all sources at once. A
/// source over the input limit is refused unread, or as soon
/// as its read passes the limit (it grew since its size was looked up): it could not be
/// rendered, and read whole it would hold its size in memory.
async fn source_digest(app: &App, key: &str, meta: &pixq_jobs::store::ObjectMeta) -> Result<String, ApiError> {
    let tag = match &meta.etag {
        Some(t) => Some(t.clone()),
        None => app.store.version_tag(&app.bucket, key).await,
    };
    let id = (key.to_string(), meta.size, tag);
    let cached = || if id.2.is_some() { app.digests.lock().expect("digest cache").get(&id).cloned() } else { None };
    if let Some(d) = cached() {
        return Ok(d);
    }
    let Some(_) = &id.2 else { return read_and_hash(app, key, meta, &id).await };
    // The first request for this source reads it; the others wait, then find the digest.
    let gate = Gate::enter(app, &id);
    let _held = gate.lock.lock().await;
    match cached() {
        Some(d) => Ok(d),
        None => read_and_hash(app, key, meta, &id).await,
    }
}

/// A source's gate in `App::hashing`, taken out of the map when its last holder is done,
/// cancelled or not (and only if the map still holds this one).
struct Gate<'a> {
    app: &'a App,
    id: crate::SourceId,
    lock: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl<'a> Gate<'a> {
    fn enter(app: &'a App, id: &crate::SourceId) -> Gate<'a> {
        let lock = app.hashing.lock().expect("hashing").entry(id.clone()).or_default().clone();
        Gate { app, id: id.clone(), lock }
    }
}

impl Drop for Gate<'_> {
    fn drop(&mut self) {
        let mut map = self.app.hashing.lock().unwrap_or_else(|e| e.into_inner());
        // Two references left (the map's and ours): nobody else waits on it.
        if map.get(&self.id).is_some_and(|l| std::sync::Arc::ptr_eq(l, &self.lock))
            && std::sync::Arc::strong_count(&self.lock) == 2
        {
            map.remove(&self.id);
        }
    }
}

/// Reads the source whole and hashes it (a miss of [`source_digest`]'s cache), caching the
/// digest when the source has a tag.
async fn read_and_hash(
    app: &App,
    key: &str,
    meta: &pixq_jobs::store::ObjectMeta,
    id: &crate::SourceId,
) -> Result<String, ApiError> {
    let max = app.config.process.limits.max_input_bytes;
    let over =
        || ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("the image is over the limit of {max} bytes"));
    if meta.size > max {
        return Err(over());
    }
    let _room = app
        .source_budget
        .hold(meta.size)
        .await
        .ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down"))?;
    let bytes = match app.store.get_at_most(&app.bucket, key, max).await {
        Err(pixq_jobs::store::StoreError::TooLarge { .. }) => return Err(over()),
        got => got.map_err(ApiError::store)?,
    };
    // Up to the input limit of hashing: off the async threads.
    let d = tokio::task::spawn_blocking(move || keys::content_digest(&bytes))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("hashing the source: {e}")))?;
    if id.2.is_some() {
        let mut cache = app.digests.lock().expect("digest cache");
        if cache.len() > 100_000 {
            cache.clear();
        }
        cache.insert(id.clone(), d.clone());
    }
    Ok(d)
}

/// The key of an existing output with this digest (of the wanted format when one is set).
async fn existing(app: &App, digest: &str, want: Option<Format>) -> Result<Option<String>, ApiError> {
    let stem = keys::output_key_stem("outputs/", digest);
    let found = app.store.list(&app.bucket, &stem).await.map_err(ApiError::store)?;
    Ok(found.into_iter().map(|m| m.key).find(|k| match want {
        Some(f) => k.ends_with(&format!(".{}", f.extension())),
        None => true,
    }))
}

fn with_cache(mut r: Response, etag: &str, vary: bool) -> Response {
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable"));
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    if vary {
        h.insert(header::VARY, HeaderValue::from_static("Accept"));
    }
    r
}

fn image_response(held: crate::download::Held, etag: &str, vary: bool) -> Response {
    let mime = Format::sniff(held.head()).map(|f| f.mime()).unwrap_or("application/octet-stream");
    let mut r = Response::new(held.into_body());
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    r.headers_mut().insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    with_cache(r, etag, vary)
}
