//! pixq-web: the web front end of the Web-Queue-Worker flow, one axum [`Router`] served two
//! ways: by `pixq serve` on the embedded default (with in-process workers) and, on AWS, by
//! the API Lambda. It depends on the jobs crate only.
//!
//! - [`api`]: batches (create, upload, start, status, server-sent events, ZIP) and the
//!   step list and validation the page uses.
//! - [`download`]: bytes sent from the store, read within a memory budget.
//! - [`guard`]: `pixq serve` answers only its own host names (DNS rebinding) and no
//!   cross-site request that changes something.
//! - [`img`]: signed on-the-fly image URLs answered from the content-addressed outputs.
//! - [`presign`]: presigned S3 URLs on AWS, so image bytes never pass through the function.
//! - [`server`]: serving the router on a socket with header time limits and a connection cap.
//! - [`sign`]: the HMAC signatures of those URLs and of upload URLs.
//! - [`zip`]: a streamed ZIP of a batch's outputs.
//!
//! Every byte from a client is hostile: names are reduced to safe keys, types are sniffed
//! from the bytes, sizes and counts are capped, keys are validated before any store call,
//! and errors are JSON (`{"error": "..."}`) with the status a client expects.

pub mod api;
pub mod download;
pub mod guard;
pub mod img;
pub mod presign;
pub mod results;
pub mod server;
pub mod sign;
pub mod zip;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use pixq_jobs::backend::Backend;
use pixq_jobs::kernel::Pipeline;
use pixq_jobs::process::{Admission, ProcessConfig};
use pixq_jobs::queue::Queue;
use pixq_jobs::store::ObjectStore;

pub use sign::Signer;

/// Settings of the web front end.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// Required as `Authorization: Bearer KEY` on the write endpoints (create and start a
    /// batch); `None` leaves them open (fine on 127.0.0.1).
    pub api_key: Option<String>,
    /// Signs upload URLs and on-the-fly image paths.
    pub signer: Signer,
    /// Most files in one batch.
    pub max_files: usize,
    /// Largest upload, bytes.
    pub max_file_bytes: u64,
    /// How long an upload URL stays valid.
    pub upload_ttl: Duration,
    /// Upload bodies held in memory at once, MB (each counts its announced size, at least
    /// 1 MB); an upload waits for room before its body is read.
    pub upload_memory_mb: u64,
    /// How long one upload may wait for room and send its body.
    pub upload_timeout: Duration,
    /// Named pipelines (`preset:NAME`), from presets.toml or the stack's parameter.
    pub presets: BTreeMap<String, Preset>,
    /// On-the-fly URLs take presets only, no free pipelines.
    pub presets_only: bool,
    /// Where on-the-fly source keys live in the bucket (`images/`): a key never leaves it.
    pub img_prefix: String,
    /// On-the-fly misses with a source up to this size render in the request; larger ones
    /// are queued (202 with `Retry-After`).
    pub inline_max_bytes: u64,
    /// Kernel limits and time limit of inline renders.
    pub process: ProcessConfig,
    /// Memory budget of inline renders, MB.
    pub inline_memory_mb: u64,
    /// Presigned S3 URLs for uploads and downloads (AWS); `None`: bytes go through this
    /// server on signed local URLs.
    pub presign: Option<Arc<dyn presign::Presign>>,
    /// How long `GET /api/batches/{batch}/events` stays open; the browser's EventSource then
    /// reconnects after the second the stream asks for and gets the status at once. `None`
    /// keeps a stream open until the batch is done. A function behind API Gateway returns
    /// its response whole, so there it is zero: every connection is one current status.
    pub events_hold: Option<Duration>,
    /// Memory for downloads at once, MB (outputs, inputs, on-the-fly images, ZIP entries):
    /// a download waits for room, up to `download_wait` (then 503 with `Retry-After`), for
    /// its size, or for a 1 MiB window when it is sent in pieces from a file of the store
    /// ([`download`]).
    pub download_memory_mb: u64,
    /// Longest a download waits for room (30 s).
    pub download_wait: Duration,
    /// Event streams open at once (those of a batch share one reader of its status, four
    /// times a second);
    /// past it a stream answers the current status and ends, and the browser reconnects a
    /// second later, as behind a function.
    pub max_event_streams: usize,
}

impl WebConfig {
    /// Defaults around a signer: 500 files of at most 50 MB per batch, 15-minute upload
    /// URLs, 512 MB of upload bodies at once, each in at most 10 minutes, event streams of
    /// at most 5 minutes and 256 at once, sources under `images/`, inline renders of sources up to 8 MB,
    /// 512 MB of downloads in memory at once.
    pub fn new(signer: Signer) -> WebConfig {
        WebConfig {
            api_key: None,
            signer,
            max_files: 500,
            max_file_bytes: 50 << 20,
            upload_ttl: Duration::from_secs(900),
            upload_memory_mb: 512,
            upload_timeout: Duration::from_secs(600),
            presets: BTreeMap::new(),
            presets_only: false,
            img_prefix: "images/".into(),
            inline_max_bytes: 8 << 20,
            process: ProcessConfig { runtime: "web".into(), ..ProcessConfig::default() },
            inline_memory_mb: 1024,
            presign: None,
            events_hold: Some(Duration::from_secs(300)),
            max_event_streams: 256,
            download_memory_mb: 512,
            download_wait: Duration::from_secs(30),
        }
    }
}

/// Why the front end cannot start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The backend has no bucket.
    #[error("the web front end needs a bucket (--bucket or the stack's BucketName)")]
    NoBucket,
    /// A preset does not parse.
    #[error("preset '{name}': {reason}")]
    Preset {
        /// Its name.
        name: String,
        /// The parser's message.
        reason: String,
    },
}

/// A named pipeline. It may say `format:auto` (as image URLs may): WebP for a client that
/// takes it, the source's format otherwise; both pipelines are parsed when it is read.
#[derive(Debug, Clone, PartialEq)]
pub struct Preset {
    text: String,
    plain: Pipeline,
    webp: Pipeline,
    auto: bool,
}

impl Preset {
    /// Parses `text`, with or without `format:auto`.
    pub fn parse(text: &str) -> Result<Preset, pixq_jobs::kernel::ParseError> {
        let (plain, auto) = img::decide_auto(text, false);
        let plain = Pipeline::parse(&plain)?;
        let webp = if auto { Pipeline::parse(&img::decide_auto(text, true).0)? } else { plain.clone() };
        let text = if auto { format!("{},format:auto", plain.canonical()) } else { plain.canonical() };
        Ok(Preset { text: text.trim_start_matches(',').to_string(), plain, webp, auto })
    }

    /// The pipeline for a client that does (or does not) take WebP.
    pub fn pipeline(&self, takes_webp: bool) -> &Pipeline {
        if takes_webp { &self.webp } else { &self.plain }
    }

    /// Whether it says `format:auto` (its answers vary by `Accept`).
    pub fn is_auto(&self) -> bool {
        self.auto
    }

    /// Its canonical text, `format:auto` kept.
    pub fn text(&self) -> &str {
        &self.text
    }
}

/// Reads presets from the text of a presets.toml: one `name = "pipeline"` per line
/// (comments with `#`, an optional `[presets]` header). Names are `[a-z0-9_-]{1,40}`.
pub fn parse_presets(text: &str) -> Result<BTreeMap<String, Preset>, SetupError> {
    let mut out = BTreeMap::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split_once(" #").map(|(a, _)| a).unwrap_or(raw).trim();
        if line.is_empty() || line.starts_with('#') || line == "[presets]" {
            continue;
        }
        let bad = |reason: String| SetupError::Preset { name: format!("line {}", n + 1), reason };
        let (name, value) = line.split_once('=').ok_or_else(|| bad("expected name = \"pipeline\"".into()))?;
        let name = name.trim();
        let value = value.trim();
        if name.is_empty()
            || name.len() > 40
            || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        {
            return Err(bad(format!("the name '{name}' is not [a-z0-9_-]{{1,40}}")));
        }
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .ok_or_else(|| bad("the pipeline must be a quoted string".into()))?;
        let p = Preset::parse(value).map_err(|e| SetupError::Preset { name: name.into(), reason: e.to_string() })?;
        out.insert(name.to_string(), p);
    }
    Ok(out)
}

/// Memory shared by requests that hold bodies: each waits for its size, counted in units
/// of 1 MB (or of 1 KiB, for many small bodies at once).
#[derive(Debug)]
pub(crate) struct Budget {
    room: Arc<tokio::sync::Semaphore>,
    units: u32,
    /// log2 of a unit's bytes.
    shift: u32,
}

impl Budget {
    fn new(mb: u64) -> Budget {
        Budget::in_units(mb, 20)
    }

    /// `mb` counted in KiB: a small body holds 1 KiB of it, not 1 MB.
    fn fine(mb: u64) -> Budget {
        Budget::in_units(mb.saturating_mul(1024), 10)
    }

    fn in_units(units: u64, shift: u32) -> Budget {
        let units = u32::try_from(units.max(1)).unwrap_or(u32::MAX).min(tokio::sync::Semaphore::MAX_PERMITS as u32);
        Budget { room: Arc::new(tokio::sync::Semaphore::new(units as usize)), units, shift }
    }

    /// Waits for room for `bytes` (at least one unit, at most the whole budget) and holds
    /// it until the returned permit drops.
    pub(crate) async fn hold(&self, bytes: u64) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let n = u32::try_from(bytes.div_ceil(1 << self.shift)).unwrap_or(u32::MAX).clamp(1, self.units);
        self.room.clone().acquire_many_owned(n).await.ok()
    }
}

/// An on-the-fly source as the store describes it: key, size, tag.
pub(crate) type SourceId = (String, u64, Option<String>);

/// Megabytes of on-the-fly sources read and hashed at once (a source not yet in the digest
/// cache is read whole): requests past it wait, so a flood of `/img` requests for large
/// sources holds at most this much, not a source's size per request.
pub(crate) const SOURCE_MEMORY_MB: u64 = 256;

/// Everything a handler needs.
#[derive(Debug)]
pub struct App {
    pub(crate) queue: Arc<dyn Queue>,
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) bucket: String,
    pub(crate) config: WebConfig,
    pub(crate) admission: Admission,
    /// Room for upload bodies (`WebConfig::upload_memory_mb`).
    pub(crate) upload_budget: Budget,
    /// Slots of open event streams (`WebConfig::max_event_streams`).
    pub(crate) streams: Arc<tokio::sync::Semaphore>,
    /// On-the-fly jobs queued lately, by job id, with when.
    pub(crate) queued: Mutex<HashMap<String, std::time::Instant>>,
    /// Held while a batch starts.
    pub(crate) starting: tokio::sync::Mutex<()>,
    /// Source digests of on-the-fly keys, by (key, size, etag or the store's version tag): a
    /// hit reads no source.
    pub(crate) digests: Mutex<HashMap<SourceId, String>>,
    /// Room for on-the-fly sources being read and hashed ([`SOURCE_MEMORY_MB`]).
    pub(crate) source_budget: Budget,
    /// Room for downloads being sent (`WebConfig::download_memory_mb`).
    pub(crate) download_budget: Budget,
    /// One read at a time per source (by the cache's key): requests for a source being
    /// hashed wait for it and find its digest in the cache.
    pub(crate) hashing: Mutex<HashMap<SourceId, Arc<tokio::sync::Mutex<()>>>>,
    /// The shared reader of each batch followed by event streams (`results::watch_status`).
    pub(crate) watchers: Mutex<HashMap<String, (u64, results::StatusWatch)>>,
    /// Successful result records by key, with the size they were read at: final once
    /// written, so a batch's status reads each one once, not on every poll.
    pub(crate) records: Mutex<HashMap<String, (u64, pixq_jobs::schema::JobResult)>>,
}

impl App {
    /// The front end on an opened backend.
    pub fn new(backend: &Backend, config: WebConfig) -> Result<Arc<App>, SetupError> {
        let bucket = backend.bucket.clone().ok_or(SetupError::NoBucket)?;
        let admission = Admission::new(config.inline_memory_mb);
        let upload_budget = Budget::new(config.upload_memory_mb);
        let streams = Arc::new(tokio::sync::Semaphore::new(config.max_event_streams.max(1)));
        let download_budget = Budget::fine(config.download_memory_mb);
        Ok(Arc::new(App {
            queue: backend.queue.clone(),
            store: backend.store.clone(),
            bucket,
            config,
            admission,
            upload_budget,
            streams,
            queued: Mutex::new(HashMap::new()),
            starting: tokio::sync::Mutex::new(()),
            digests: Mutex::new(HashMap::new()),
            source_budget: Budget::new(SOURCE_MEMORY_MB),
            download_budget,
            hashing: Mutex::new(HashMap::new()),
            records: Mutex::new(HashMap::new()),
            watchers: Mutex::new(HashMap::new()),
        }))
    }

    /// Whether no request queued job `id` within its time limit (and so this one should):
    /// records it as queued now.
    pub(crate) fn first_request_for(&self, id: &str) -> bool {
        let ttl = self.config.process.job_timeout.max(Duration::from_secs(60));
        let now = std::time::Instant::now();
        let mut q = self.queued.lock().expect("queued jobs");
        if q.len() > 10_000 {
            q.retain(|_, at| now.duration_since(*at) < ttl);
        }
        match q.get(id) {
            Some(at) if now.duration_since(*at) < ttl => false,
            _ => {
                q.insert(id.to_string(), now);
                true
            }
        }
    }

    /// Whether the write endpoints need the API key.
    pub fn has_api_key(&self) -> bool {
        self.config.api_key.is_some()
    }
}

/// The router: API, page and on-the-fly images.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/healthz", get(|| async { "ok" }))
        .route("/api/ops", get(api::ops))
        .route("/api/validate", post(api::validate))
        .route("/api/batches", post(api::create))
        .route("/api/uploads/{batch}/{index}", put(api::upload))
        .route("/api/batches/{batch}", get(results::status))
        .route("/api/batches/{batch}/start", post(api::start))
        .route("/api/batches/{batch}/events", get(results::events))
        .route("/api/batches/{batch}/zip", get(results::zip))
        .route("/api/batches/{batch}/files/{index}/{which}", get(results::file))
        .route("/img/{sig}/{pipeline}/{*key}", get(img::image))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .with_state(app)
}

const PAGE: &str = include_str!("../static/index.html");

async fn page() -> Response {
    let mut r = PAGE.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    // The page loads nothing from any network: scripts and styles are inline, images come
    // from this server (blob: for local previews).
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' blob: data:; connect-src 'self'",
        ),
    );
    r
}

/// A JSON error: `{"error": "..."}` with a status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: serde_json::Value,
}

impl ApiError {
    /// An error with a message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, body: serde_json::json!({ "error": message.into() }) }
    }

    /// Adds a field to the body.
    pub fn with(mut self, key: &str, value: serde_json::Value) -> ApiError {
        self.body[key] = value;
        self
    }

    /// The store failed: 503 when it may pass, else 500.
    pub(crate) fn store(e: pixq_jobs::store::StoreError) -> ApiError {
        tracing::warn!(error = %e, "store");
        let status = if e.is_transient() { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::INTERNAL_SERVER_ERROR };
        // The store's own words (bucket, key, an AWS account or role) stay in the log.
        let said = if e.is_transient() { "storage is unavailable; try again" } else { "storage error" };
        ApiError::new(status, said)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, axum::Json(self.body)).into_response();
        // Busy or unavailable: worth another try in a few seconds.
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_body_waits_for_room_in_the_budget() {
        let b = Budget::new(3);
        let first = b.hold(2 << 20).await.unwrap();
        // 1.5 MB rounds up to 2: no room while the first holds 2 of 3.
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(300), b.hold(3 << 19)).await;
        assert!(waiting.is_err(), "held more than the budget");
        // A tiny one counts 1 MB and fits; one larger than the whole budget takes all of it.
        let tiny = b.hold(10).await.unwrap();
        drop((first, tiny));
        let all = b.hold(1 << 40).await.unwrap();
        assert_eq!(all.num_permits(), 3);
        assert!(tokio::time::timeout(std::time::Duration::from_millis(300), b.hold(1)).await.is_err());
    }

    #[test]
    fn presets_parse_and_refuse_what_they_must() {
        let p =
            parse_presets("[presets]\n# comment\nthumb = \"thumbnail:200,format:webp\"  # small\nbw=\"grayscale\"\n")
                .unwrap();
        assert_eq!(p["thumb"].text(), "thumbnail:200,format:webp");
        assert_eq!(p["bw"].text(), "grayscale");
        // format:auto, as the stack's default presets say it: WebP for those who take it.
        let p = parse_presets(&"thumb = \"thumbnail:320,format:auto\"; large = \"format:auto\"".replace(';', "\n"))
            .unwrap();
        let t = &p["thumb"];
        assert!(t.is_auto());
        assert_eq!(t.text(), "thumbnail:320,format:auto");
        assert_eq!(t.pipeline(true).canonical(), "thumbnail:320,format:webp");
        assert_eq!(t.pipeline(false).canonical(), "thumbnail:320");
        assert_eq!(p["large"].text(), "format:auto");
        assert!(!parse_presets("x = \"thumbnail:9\"").unwrap()["x"].is_auto());
        for bad in ["Thumb = \"grayscale\"", "x = grayscale", "x = \"blur:0\"", "just text", "../x = \"invert\""] {
            assert!(parse_presets(bad).is_err(), "{bad}");
        }
        let e = parse_presets("x = \"blur:0\"").unwrap_err().to_string();
        assert!(e.contains("preset 'x'") && e.contains("sigma"), "{e}");
    }
}
