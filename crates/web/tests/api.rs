//! Every endpoint and its error cases, in process (tower `oneshot` on the router), on the
//! embedded default in a temporary home, with a real worker doing the jobs.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use pixq_jobs::backend::{Backend, Connect};
use pixq_jobs::worker::WorkerConfig;
use pixq_web::{App, Signer, WebConfig};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

const KEY: &[u8] = b"test signing key, 16+ bytes";

fn sample(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/../../samples/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

struct Env {
    _dir: tempfile::TempDir,
    backend: Backend,
    router: Router,
}

async fn env(tune: impl FnOnce(&mut WebConfig)) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let backend =
        pixq_jobs::backend::open(&Connect { home: dir.path().join("home"), ..Connect::default() }).await.unwrap();
    let mut cfg = WebConfig::new(Signer::new(KEY).unwrap());
    tune(&mut cfg);
    let router = pixq_web::router(App::new(&backend, cfg).unwrap());
    Env { _dir: dir, backend, router }
}

impl Env {
    async fn call(&self, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
        let r = self.router.clone().oneshot(req).await.unwrap();
        let (parts, body) = r.into_parts();
        (parts.status, parts.headers, body.collect().await.unwrap().to_bytes().to_vec())
    }

    async fn json(&self, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut b = Request::builder().method(method).uri(uri);
        if body.is_some() {
            b = b.header(header::CONTENT_TYPE, "application/json");
        }
        let req = b.body(body.map(|v| Body::from(v.to_string())).unwrap_or_default()).unwrap();
        let (status, _, bytes) = self.call(req).await;
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    async fn put(&self, uri: &str, body: Vec<u8>) -> (StatusCode, Value) {
        let req = Request::builder().method("PUT").uri(uri).body(Body::from(body)).unwrap();
        let (status, _, bytes) = self.call(req).await;
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// Runs a worker on the backend until `until` is done.
    fn worker(&self) -> (CancellationToken, tokio::task::JoinHandle<Arc<pixq_jobs::worker::WorkerStats>>) {
        let stop = CancellationToken::new();
        let cfg = WorkerConfig { concurrency: 2, wait: Duration::from_millis(100), ..WorkerConfig::default() };
        let h = tokio::spawn(pixq_jobs::worker::run(
            self.backend.queue.clone(),
            self.backend.store.clone(),
            cfg,
            stop.clone(),
        ));
        (stop, h)
    }
}

fn files(list: &[(&str, usize)]) -> Value {
    Value::Array(list.iter().map(|(n, s)| json!({"name": n, "size": s, "type": "image/jpeg"})).collect())
}

#[tokio::test]
async fn health_ops_and_validation() {
    let e = env(|_| {}).await;
    let (s, _, b) = e.call(Request::get("/healthz").body(Body::empty()).unwrap()).await;
    assert_eq!((s, b.as_slice()), (StatusCode::OK, b"ok".as_slice()));
    let (s, ops) = e.json("GET", "/api/ops", None).await;
    assert_eq!(s, StatusCode::OK);
    let steps = ops["steps"].as_array().unwrap();
    assert_eq!(steps.len(), pixq_jobs::kernel::op::STEPS.len());
    assert!(steps.iter().any(|s| s["name"] == "thumbnail" && s["example"] == "thumbnail:1024"));
    let (s, v) = e.json("POST", "/api/validate", Some(json!({"pipeline": "thumb:10,grey"}))).await;
    assert_eq!((s, v["canonical"].as_str()), (StatusCode::OK, Some("thumbnail:10,grayscale")));
    let (s, v) = e.json("POST", "/api/validate", Some(json!({"pipeline": "grayscale,blur:0"}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["step"], 2);
    assert!(v["error"].as_str().unwrap().contains("sigma must be > 0"), "{v}");
    let (s, v) = e.json("POST", "/api/validate", Some(json!({"nope": 1}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["error"].as_str().unwrap().contains("request body"), "{v}");
    // Over the 2 MiB body limit: 413; not JSON: 415; both as JSON errors.
    let big = json!({"pipeline": "x".repeat(3 << 20)});
    let (s, v) = e.json("POST", "/api/validate", Some(big)).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    let req = Request::post("/api/validate").body(Body::from("{}")).unwrap();
    let (s, _, b) = e.call(req).await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(serde_json::from_slice::<Value>(&b).unwrap()["error"].is_string());
    let (s, v) = e.json("GET", "/api/nothing", None).await;
    assert_eq!((s, v["error"].as_str()), (StatusCode::NOT_FOUND, Some("no such endpoint")));
    let (s, _, page) = e.call(Request::get("/").body(Body::empty()).unwrap()).await;
    assert_eq!(s, StatusCode::OK);
    let page = String::from_utf8(page).unwrap();
    assert!(
        page.contains("/api/batches") && !page.contains("http://") && !page.contains("https://"),
        "the page loads nothing from a network"
    );
}

#[tokio::test]
async fn create_refuses_bad_pipelines_counts_and_sizes() {
    let e = env(|c| {
        c.max_files = 3;
        c.max_file_bytes = 1000;
    })
    .await;
    let (s, v) = e
        .json(
            "POST",
            "/api/batches",
            Some(json!({"pipeline": "thumbnail:10,wobble", "files": files(&[("a.jpg", 10)])})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["error"].as_str().unwrap().contains("step 2 'wobble'"), "{v}");
    let (s, v) =
        e.json("POST", "/api/batches", Some(json!({"pipeline": "grayscale", "files": files(&[("a", 1); 4])}))).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    let (s, v) = e
        .json("POST", "/api/batches", Some(json!({"pipeline": "grayscale", "files": files(&[("big.jpg", 1001)])})))
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert!(v["error"].as_str().unwrap().contains("big.jpg"), "{v}");
    let (s, _) = e.json("POST", "/api/batches", Some(json!({"pipeline": "grayscale", "files": []}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) =
        e.json("POST", "/api/batches", Some(json!({"pipeline": "grayscale", "files": files(&[("zero", 0)])}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) =
        e.json("POST", "/api/batches", Some(json!({"pipeline": "preset:none", "files": files(&[("a", 1)])}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // A hostile name becomes a safe key.
    let (s, v) = e
        .json("POST", "/api/batches", Some(json!({"pipeline": "grayscale", "files": files(&[("../../x\n.jpg", 5)])})))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

#[tokio::test]
async fn the_api_key_guards_the_write_endpoints() {
    let e = env(|c| c.api_key = Some("sesame".into())).await;
    let body = json!({"pipeline": "grayscale", "files": files(&[("a.jpg", 10)])}).to_string();
    for auth in [None, Some("Bearer wrong"), Some("sesame"), Some("Basic sesame")] {
        let mut r = Request::post("/api/batches").header(header::CONTENT_TYPE, "application/json");
        if let Some(a) = auth {
            r = r.header(header::AUTHORIZATION, a);
        }
        let (s, _, b) = e.call(r.body(Body::from(body.clone())).unwrap()).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{auth:?}: {}", String::from_utf8_lossy(&b));
    }
    let r = Request::post("/api/batches")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, "Bearer sesame")
        .body(Body::from(body))
        .unwrap();
    let (s, _, b) = e.call(r).await;
    assert_eq!(s, StatusCode::CREATED);
    let batch = serde_json::from_slice::<Value>(&b).unwrap()["batch"].as_str().unwrap().to_string();
    let (s, _) = e.json("POST", &format!("/api/batches/{batch}/start"), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // Reads are by batch id (unguessable), as the page's <img> tags need.
    let (s, _) = e.json("GET", &format!("/api/batches/{batch}"), None).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn uploads_are_signed_sized_and_sniffed() {
    let e = env(|c| c.upload_ttl = Duration::from_secs(60)).await;
    let photo = sample("coffee.jpg");
    let (s, v) = e
        .json(
            "POST",
            "/api/batches",
            Some(json!({"pipeline": "thumbnail:64", "files": files(&[("a.jpg", photo.len()), ("b.txt", 11)])})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let batch = v["batch"].as_str().unwrap().to_string();
    let url0 = v["uploads"][0]["url"].as_str().unwrap().to_string();
    let url1 = v["uploads"][1]["url"].as_str().unwrap().to_string();
    // Tampered: another file index, another expiry, another signature, none.
    let swapped = url0.replacen(&format!("/{batch}/0?"), &format!("/{batch}/1?"), 1);
    let (s, _) = e.put(&swapped, photo.clone()).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let exp: i64 = url0.split("expires=").nth(1).unwrap().split('&').next().unwrap().parse().unwrap();
    let later = url0.replace(&format!("expires={exp}"), &format!("expires={}", exp + 1000));
    assert_eq!(e.put(&later, photo.clone()).await.0, StatusCode::FORBIDDEN);
    let unsigned = url0.split('?').next().unwrap().to_string();
    assert_eq!(e.put(&unsigned, photo.clone()).await.0, StatusCode::FORBIDDEN);
    let mut bad_sig = url0.clone();
    bad_sig.pop();
    bad_sig.push(if url0.ends_with('A') { 'B' } else { 'A' });
    assert_eq!(e.put(&bad_sig, photo.clone()).await.0, StatusCode::FORBIDDEN);
    // Expired: a URL signed in the past, by the same key.
    let signer = Signer::new(KEY).unwrap();
    let past = 1_000_000_000i64;
    let sig = signer.sign(&[b"upload", batch.as_bytes(), b"0", past.to_string().as_bytes()]);
    let (s, v) = e.put(&format!("/api/uploads/{batch}/0?expires={past}&sig={sig}"), photo.clone()).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(v["error"].as_str().unwrap().contains("expired"), "{v}");
    // Size other than announced; bytes that are not an image (whatever the name says).
    assert_eq!(e.put(&url0, photo[..100].to_vec()).await.0, StatusCode::BAD_REQUEST);
    let (s, v) = e.put(&url1, b"hello world".to_vec()).await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{v}");
    // The real one.
    let (s, v) = e.put(&url0, photo.clone()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["format"], "jpg");
    // Unknown batch, bad batch id.
    let sig = signer.sign(&[b"upload", b"b1", b"0", (exp).to_string().as_bytes()]);
    assert_eq!(
        e.put(&format!("/api/uploads/b1/0?expires={exp}&sig={sig}"), photo.clone()).await.0,
        StatusCode::NOT_FOUND
    );
    let (s, _) = e.json("GET", "/api/batches/..%2Fx", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, v) = e.json("GET", "/api/batches/b20260101-000000-deadbeef", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(v["error"].as_str().unwrap().contains("unknown batch"), "{v}");
    for path in ["events", "zip"] {
        let (s, _) = e.json("GET", &format!("/api/batches/b20260101-000000-deadbeef/{path}"), None).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}");
    }
}

#[tokio::test]
async fn a_batch_runs_end_to_end_and_zips() {
    let e = env(|_| {}).await;
    let (stop, worker) = e.worker();
    let names = ["coffee.jpg", "chelsea.jpg", "astronaut.png"];
    let photos: Vec<Vec<u8>> = names.iter().map(|n| sample(n)).collect();
    let list: Vec<(&str, usize)> =
        names.iter().zip(&photos).map(|(n, p)| (*n, p.len())).chain([("never.jpg", 5)]).collect();
    let (s, v) = e
        .json("POST", "/api/batches", Some(json!({"pipeline": "thumbnail:100,format:png", "files": files(&list)})))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let batch = v["batch"].as_str().unwrap().to_string();
    for (i, p) in photos.iter().enumerate() {
        let url = v["uploads"][i]["url"].as_str().unwrap();
        assert_eq!(e.put(url, p.clone()).await.0, StatusCode::OK);
    }
    let (s, st) = e.json("GET", &format!("/api/batches/{batch}"), None).await;
    assert_eq!((s, st["counts"]["uploaded"].as_u64(), st["started"].as_bool()), (StatusCode::OK, Some(3), Some(false)));
    let (s, v) = e.json("POST", &format!("/api/batches/{batch}/start"), None).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!((v["jobs"].as_u64(), v["missing"][0].as_str()), (Some(3), Some("never.jpg")));
    assert_eq!(e.json("POST", &format!("/api/batches/{batch}/start"), None).await.0, StatusCode::CONFLICT);
    assert_eq!(e.put(v_url(&e, &batch).await.as_str(), photos[0].clone()).await.0, StatusCode::CONFLICT);

    // Server-sent events until done.
    let (s, h, body) = e.call(Request::get(format!("/api/batches/{batch}/events")).body(Body::empty()).unwrap()).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h[header::CONTENT_TYPE], "text/event-stream");
    let text = String::from_utf8(body).unwrap();
    let done = text.split("\n\n").find(|ev| ev.starts_with("event: done")).expect("a done event");
    let st: Value = serde_json::from_str(done.lines().nth(1).unwrap().strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(st["counts"]["ok"], 3, "{st}");
    assert_eq!(st["counts"]["missing"], 1);
    for f in st["files"].as_array().unwrap().iter().take(3) {
        assert_eq!(f["status"], "ok", "{f}");
        assert!(f["width"].as_u64().unwrap().max(f["height"].as_u64().unwrap()) == 100, "{f}");
        let (s, h, png) = e.call(Request::get(f["output_url"].as_str().unwrap()).body(Body::empty()).unwrap()).await;
        assert_eq!((s, h[header::CONTENT_TYPE].to_str().unwrap()), (StatusCode::OK, "image/png"));
        assert_eq!(png.len() as u64, f["bytes"].as_u64().unwrap());
        let (s, _, input) = e.call(Request::get(f["input_url"].as_str().unwrap()).body(Body::empty()).unwrap()).await;
        assert_eq!((s, input.len() as u64), (StatusCode::OK, f["size"].as_u64().unwrap()));
    }
    let (s, h, _) = e
        .call(Request::get(format!("/api/batches/{batch}/files/0/output?download=true")).body(Body::empty()).unwrap())
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h[header::CONTENT_DISPOSITION], "attachment; filename=\"0000-coffee.png\"");
    assert_eq!(e.json("GET", &format!("/api/batches/{batch}/files/3/output"), None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(e.json("GET", &format!("/api/batches/{batch}/files/9/input"), None).await.0, StatusCode::NOT_FOUND);

    // The ZIP holds the three outputs under their names.
    let (s, h, zip) = e.call(Request::get(format!("/api/batches/{batch}/zip")).body(Body::empty()).unwrap()).await;
    assert_eq!((s, h[header::CONTENT_TYPE].to_str().unwrap()), (StatusCode::OK, "application/zip"));
    let names_in_zip: Vec<String> = zip_names(&zip);
    assert_eq!(names_in_zip, ["0000-coffee.png", "0001-chelsea.png", "0002-astronaut.png"]);
    stop.cancel();
    worker.await.unwrap();
}

/// The AWS side as the API function sees it, on the local store: presigned URLs that name
/// the key, and streamed writes into the store (counted).
#[derive(Debug)]
struct FakeS3 {
    store: Arc<dyn pixq_jobs::store::ObjectStore>,
    streamed: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl pixq_web::presign::Presign for FakeS3 {
    async fn put(
        &self,
        bucket: &str,
        key: &str,
        size: u64,
        _: Duration,
    ) -> Result<(String, Vec<(String, String)>), pixq_jobs::store::StoreError> {
        Ok((format!("https://s3.test/{bucket}/{key}"), vec![("content-length".into(), size.to_string())]))
    }

    async fn get(
        &self,
        bucket: &str,
        key: &str,
        download: Option<&str>,
        _: Duration,
    ) -> Result<String, pixq_jobs::store::StoreError> {
        Ok(format!("https://s3.test/{bucket}/{key}?download={}", download.unwrap_or_default()))
    }

    async fn put_stream(
        &self,
        bucket: &str,
        key: &str,
        content_type: &str,
        chunks: pixq_web::presign::Chunks,
    ) -> Result<u64, pixq_jobs::store::StoreError> {
        use futures::TryStreamExt;
        let parts: Vec<Vec<u8>> = chunks.try_collect().await?;
        let body = parts.concat();
        let n = body.len() as u64;
        self.store.put(bucket, key, body, content_type).await?;
        self.streamed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(n)
    }
}

#[tokio::test]
async fn behind_a_buffering_function_events_end_at_once_and_the_zip_is_written_to_the_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let backend =
        pixq_jobs::backend::open(&Connect { home: dir.path().join("home"), ..Connect::default() }).await.unwrap();
    let s3 = Arc::new(FakeS3 { store: backend.store.clone(), streamed: Default::default() });
    let mut cfg = WebConfig::new(Signer::new(KEY).unwrap());
    cfg.presign = Some(s3.clone());
    cfg.events_hold = Some(Duration::ZERO);
    let router = pixq_web::router(App::new(&backend, cfg).unwrap());
    let e = Env { _dir: dir, backend, router };
    let bucket = e.backend.bucket.clone().unwrap();

    let names = ["coffee.jpg", "astronaut.png"];
    let photos: Vec<Vec<u8>> = names.iter().map(|n| sample(n)).collect();
    let list: Vec<(&str, usize)> = names.iter().zip(&photos).map(|(n, p)| (*n, p.len())).collect();
    let (s, v) = e.json("POST", "/api/batches", Some(json!({"pipeline": "thumbnail:64", "files": files(&list)}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let batch = v["batch"].as_str().unwrap().to_string();
    // The client PUTs to S3 directly: here, straight into the store at the presigned key.
    for (i, p) in photos.iter().enumerate() {
        let url = v["uploads"][i]["url"].as_str().unwrap();
        let key = url.strip_prefix(&format!("https://s3.test/{}/", bucket)).unwrap();
        e.backend.store.put(&bucket, key, p.clone(), "image/jpeg").await.unwrap();
        // Before the start, the status counts what is in the bucket (one listing).
        let (s, v) = e.json("GET", &format!("/api/batches/{batch}"), None).await;
        assert_eq!((s, &v["counts"]["uploaded"]), (StatusCode::OK, &json!(i + 1)), "{v}");
    }
    assert_eq!(e.json("POST", &format!("/api/batches/{batch}/start"), None).await.0, StatusCode::ACCEPTED);

    // Before any worker runs: one status, a reconnect hint, and the stream ends.
    let events = format!("/api/batches/{batch}/events");
    let (s, _, body) = e.call(Request::get(&events).body(Body::empty()).unwrap()).await;
    let text = String::from_utf8(body).unwrap();
    assert_eq!(s, StatusCode::OK);
    assert_eq!(text.matches("event: status").count(), 1, "{text}");
    assert!(text.contains("retry: 1000") && text.contains("queued"), "{text}");

    // The worker reports each finished job; the test waits for both, not for a clock.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let cfg =
        WorkerConfig { concurrency: 2, events: Some(tx), wait: Duration::from_millis(100), ..WorkerConfig::default() };
    let worker =
        tokio::spawn(pixq_jobs::worker::run(e.backend.queue.clone(), e.backend.store.clone(), cfg, stop.clone()));
    let mut finished = 0;
    while finished < 2 {
        match rx.recv().await.expect("the worker runs until stopped") {
            pixq_jobs::worker::Event::Done { .. } => finished += 1,
            pixq_jobs::worker::Event::Failed { reason, .. } => panic!("a job failed: {reason}"),
            _ => {}
        }
    }
    let (_, _, body) = e.call(Request::get(&events).body(Body::empty()).unwrap()).await;
    assert!(String::from_utf8(body).unwrap().starts_with("event: done"));

    // The ZIP: written to the bucket once, then a redirect to a presigned GET of it.
    let (s, h, _) = e.call(Request::get(format!("/api/batches/{batch}/zip")).body(Body::empty()).unwrap()).await;
    assert_eq!(s, StatusCode::FOUND);
    let location = h[header::LOCATION].to_str().unwrap().to_string();
    let prefix = format!("https://s3.test/{}/", bucket);
    let (key, download) = location.strip_prefix(&prefix).unwrap().split_once("?download=").unwrap();
    assert!(key.starts_with(&format!("zips/{batch}/")) && key.ends_with(".zip"), "{key}");
    assert_eq!(download, format!("{batch}.zip"));
    let zip = e.backend.store.get(&bucket, key).await.unwrap();
    assert_eq!(zip_names(&zip), ["0000-coffee.jpg", "0001-astronaut.png"]);
    let (s, h, _) = e.call(Request::get(format!("/api/batches/{batch}/zip")).body(Body::empty()).unwrap()).await;
    assert_eq!((s, h[header::LOCATION].to_str().unwrap()), (StatusCode::FOUND, location.as_str()));
    assert_eq!(s3.streamed.load(std::sync::atomic::Ordering::SeqCst), 1, "the second request reuses the archive");
    stop.cancel();
    worker.await.unwrap();
}

/// An upload URL of file 0 of `batch`, freshly signed (for the closed-batch check).
async fn v_url(_e: &Env, batch: &str) -> String {
    let exp = pixq_jobs::clock::now_ms() / 1000 + 60;
    let sig = Signer::new(KEY).unwrap().sign(&[b"upload", batch.as_bytes(), b"0", exp.to_string().as_bytes()]);
    format!("/api/uploads/{batch}/0?expires={exp}&sig={sig}")
}

/// Entry names from a ZIP's central directory.
fn zip_names(zip: &[u8]) -> Vec<String> {
    let end = zip.len() - 22;
    assert_eq!(&zip[end..end + 4], &[0x50, 0x4b, 0x05, 0x06]);
    let n = u16::from_le_bytes([zip[end + 10], zip[end + 11]]) as usize;
    let mut at = u32::from_le_bytes(zip[end + 16..end + 20].try_into().unwrap()) as usize;
    (0..n)
        .map(|_| {
            let len = u16::from_le_bytes([zip[at + 28], zip[at + 29]]) as usize;
            let name = String::from_utf8(zip[at + 46..at + 46 + len].to_vec()).unwrap();
            at += 46 + len;
            name
        })
        .collect()
}

#[tokio::test]
async fn on_the_fly_images_hit_miss_and_refuse() {
    let e = env(|c| {
        c.presets = pixq_web::parse_presets("thumb = \"thumbnail:50,format:png\"\nauto = \"thumbnail:40,format:auto\"")
            .unwrap();
        c.inline_max_bytes = 200_000;
    })
    .await;
    let store = e.backend.store.clone();
    store.put("pixq", "images/cats/chelsea.jpg", sample("chelsea.jpg"), "image/jpeg").await.unwrap();
    store.put("pixq", "images/big.png", sample("astronaut.png"), "image/png").await.unwrap();
    let signer = Signer::new(KEY).unwrap();
    let get = |path: String, accept: &'static str, inm: Option<String>| {
        let mut r = Request::get(path).header(header::ACCEPT, accept);
        if let Some(t) = inm {
            r = r.header(header::IF_NONE_MATCH, t);
        }
        r.body(Body::empty()).unwrap()
    };

    // Miss renders inline; the second request is a hit with the same bytes and ETag; 304.
    let path = signer.img_path("thumbnail:80,format:auto", "cats/chelsea.jpg", None);
    let (s, h1, b1) = e.call(get(path.clone(), "image/avif,image/webp,*/*", None)).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b1));
    assert_eq!(h1[header::CONTENT_TYPE], "image/webp");
    assert_eq!(h1[header::VARY], "Accept");
    assert!(h1[header::CACHE_CONTROL].to_str().unwrap().contains("max-age=31536000"));
    let (s, h2, b2) = e.call(get(path.clone(), "image/webp", None)).await;
    assert_eq!((s, &b2, &h2[header::ETAG]), (StatusCode::OK, &b1, &h1[header::ETAG]));
    let etag = h1[header::ETAG].to_str().unwrap().to_string();
    let (s, h3, b3) = e.call(get(path.clone(), "image/webp", Some(etag.clone()))).await;
    assert_eq!((s, b3.len()), (StatusCode::NOT_MODIFIED, 0));
    assert_eq!(h3[header::ETAG], etag.as_str());
    // Without WebP in Accept: the input's format (JPEG), another ETag.
    let (s, h4, _) = e.call(get(path.clone(), "image/png,image/*", None)).await;
    assert_eq!((s, h4[header::CONTENT_TYPE].to_str().unwrap()), (StatusCode::OK, "image/jpeg"));
    assert_ne!(h4[header::ETAG], h1[header::ETAG]);

    // Presets.
    let (s, h, _) = e.call(get(signer.img_path("preset:thumb", "cats/chelsea.jpg", None), "*/*", None)).await;
    assert_eq!((s, h[header::CONTENT_TYPE].to_str().unwrap()), (StatusCode::OK, "image/png"));
    let (s, _, _) = e.call(get(signer.img_path("preset:nope", "cats/chelsea.jpg", None), "*/*", None)).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // A URL that expires is cached no longer than it lives, and not as immutable.
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64 + 100;
    let (s, h, _) =
        e.call(get(signer.img_path("thumbnail:80,format:auto", "cats/chelsea.jpg", Some(t)), "*/*", None)).await;
    assert_eq!(s, StatusCode::OK);
    let cc = h[header::CACHE_CONTROL].to_str().unwrap();
    let age: u64 = cc.strip_prefix("public, max-age=").and_then(|a| a.parse().ok()).unwrap_or(u64::MAX);
    assert!((50..=100).contains(&age), "{cc}");
    // A preset with format:auto: WebP for a client that takes it, the input's format else.
    for (accept, want) in [("image/webp,*/*", "image/webp"), ("*/*", "image/jpeg")] {
        let (s, h, _) = e.call(get(signer.img_path("preset:auto", "cats/chelsea.jpg", None), accept, None)).await;
        assert_eq!((s, h[header::CONTENT_TYPE].to_str().unwrap()), (StatusCode::OK, want), "{accept}");
        assert_eq!(h[header::VARY], "Accept");
    }

    // A source over the inline limit is queued: 202 with Retry-After, and a job on the queue.
    let (s, h, _) = e.call(get(signer.img_path("grayscale", "big.png", None), "*/*", None)).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(h[header::RETRY_AFTER], "5");
    assert_eq!(e.backend.queue.counts().await.unwrap().visible, 1);
    // Asked again while it is being made: the same answer, no second job.
    for _ in 0..3 {
        let (s, _, _) = e.call(get(signer.img_path("grayscale", "big.png", None), "*/*", None)).await;
        assert_eq!(s, StatusCode::ACCEPTED);
    }
    assert_eq!(e.backend.queue.counts().await.unwrap().visible, 1);

    // Refusals: bad signature, tampered pipeline or key, expired, unknown key, traversal,
    // bad pipeline (signed), free pipeline on a presets-only server.
    let good = signer.img_path("grayscale", "cats/chelsea.jpg", None);
    let sig = good.split('/').nth(2).unwrap();
    for bad in [
        good.replace(sig, "AAAA"),
        good.replace("grayscale", "invert"),
        good.replace("chelsea", "chelsey"),
        format!("/img/{sig}/grayscale/cats/chelsea.jpg?expires=99999999999"),
    ] {
        let (s, _, b) = e.call(get(bad.clone(), "*/*", None)).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{bad}: {}", String::from_utf8_lossy(&b));
    }
    let expired = signer.img_path("grayscale", "cats/chelsea.jpg", Some(1_000_000_000));
    assert_eq!(e.call(get(expired, "*/*", None)).await.0, StatusCode::FORBIDDEN);
    assert_eq!(
        e.call(get(signer.img_path("grayscale", "cats/none.jpg", None), "*/*", None)).await.0,
        StatusCode::NOT_FOUND
    );
    for key in ["../home/queue.db", "cats/../../x", "cats//x.jpg", "./x", "a\u{1}b"] {
        let (s, _, b) = e.call(get(signer.img_path("grayscale", key, None), "*/*", None)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{key}: {}", String::from_utf8_lossy(&b));
    }
    let (s, _, _) = e.call(get(signer.img_path("blur:0", "cats/chelsea.jpg", None), "*/*", None)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // A broken source is a clear failure, not a crash.
    store.put("pixq", "images/broken.jpg", sample("coffee.jpg")[..500].to_vec(), "image/jpeg").await.unwrap();
    let (s, _, b) = e.call(get(signer.img_path("grayscale", "broken.jpg", None), "*/*", None)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{}", String::from_utf8_lossy(&b));
    // A source over the input limit is refused, not read whole to hash it: here 64 GiB
    // (a sparse file in the store's folder).
    let huge = e._dir.path().join("home/store/pixq/images/huge.jpg");
    std::fs::create_dir_all(huge.parent().unwrap()).unwrap();
    std::fs::File::create(&huge).unwrap().set_len(64 << 30).unwrap();
    let (s, _, b) = e.call(get(signer.img_path("grayscale", "huge.jpg", None), "*/*", None)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{}", String::from_utf8_lossy(&b));
    assert!(String::from_utf8_lossy(&b).contains("over the limit"), "{}", String::from_utf8_lossy(&b));

    let only = env(|c| {
        c.presets = pixq_web::parse_presets("thumb = \"thumbnail:50\"").unwrap();
        c.presets_only = true;
    })
    .await;
    only.backend.store.put("pixq", "images/c.jpg", sample("chelsea.jpg"), "image/jpeg").await.unwrap();
    assert_eq!(only.call(get(signer.img_path("grayscale", "c.jpg", None), "*/*", None)).await.0, StatusCode::FORBIDDEN);
    assert_eq!(only.call(get(signer.img_path("preset:thumb", "c.jpg", None), "*/*", None)).await.0, StatusCode::OK);
}

/// Past `max_event_streams` open streams, a stream answers the current status and ends (the
/// browser reconnects a second later), instead of one more reader of the status four times
/// a second; a slot frees when its stream is dropped.
#[tokio::test]
async fn event_streams_past_the_cap_answer_once_and_end() {
    let e = env(|c| c.max_event_streams = 1).await;
    let (s, v) =
        e.json("POST", "/api/batches", Some(json!({"pipeline": "grayscale", "files": files(&[("a.jpg", 10)])}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let events = format!("/api/batches/{}/events", v["batch"].as_str().unwrap());
    let open = || e.router.clone().oneshot(Request::get(&events).body(Body::empty()).unwrap());
    let held = open().await.unwrap();
    assert_eq!(held.status(), StatusCode::OK);
    let second =
        tokio::time::timeout(Duration::from_secs(20), e.call(Request::get(&events).body(Body::empty()).unwrap()))
            .await
            .expect("a stream past the cap stays open");
    let text = String::from_utf8(second.2).unwrap();
    assert_eq!(text.matches("event: status").count(), 1, "{text}");
    assert!(text.contains("retry: 1000"), "{text}");
    drop(held);
    let mut third = open().await.unwrap().into_body();
    let first = third.frame().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(first.data_ref().unwrap()).contains("event: status"));
    let more = tokio::time::timeout(Duration::from_millis(700), third.frame()).await;
    assert!(more.is_err(), "a stream with a slot ended early: {more:?}");
}

/// Starts of one batch at once: one starts it, the others are told it has; each job is
/// queued once.
#[tokio::test]
async fn concurrent_starts_queue_each_job_once() {
    let e = env(|_| {}).await;
    let photo = sample("coffee.jpg");
    let (s, v) = e
        .json("POST", "/api/batches", Some(json!({"pipeline": "grayscale", "files": files(&[("a.jpg", photo.len())])})))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let batch = v["batch"].as_str().unwrap().to_string();
    assert_eq!(e.put(v["uploads"][0]["url"].as_str().unwrap(), photo).await.0, StatusCode::OK);
    let start = format!("/api/batches/{batch}/start");
    let starts: Vec<_> = (0..8).map(|_| e.json("POST", &start, None)).collect();
    let got = futures::future::join_all(starts).await;
    let ok = got.iter().filter(|(s, _)| *s == StatusCode::ACCEPTED).count();
    assert_eq!(ok, 1, "{got:?}");
    assert!(got.iter().all(|(s, _)| *s == StatusCode::ACCEPTED || *s == StatusCode::CONFLICT), "{got:?}");
    assert_eq!(e.backend.queue.counts().await.unwrap().visible, 1);
}

/// Counts whole reads of one key, forwarding everything to the store it wraps.
#[derive(Debug)]
struct CountingReads {
    inner: Arc<dyn pixq_jobs::store::ObjectStore>,
    key: &'static str,
    reads: std::sync::atomic::AtomicUsize,
    /// Listings of any prefix.
    lists: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl pixq_jobs::store::ObjectStore for CountingReads {
    async fn head(
        &self,
        b: &str,
        k: &str,
    ) -> Result<Option<pixq_jobs::store::ObjectMeta>, pixq_jobs::store::StoreError> {
        self.inner.head(b, k).await
    }
    async fn get(&self, b: &str, k: &str) -> Result<Vec<u8>, pixq_jobs::store::StoreError> {
        self.get_at_most(b, k, u64::MAX).await
    }
    async fn get_at_most(&self, b: &str, k: &str, max: u64) -> Result<Vec<u8>, pixq_jobs::store::StoreError> {
        if k == self.key {
            self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        self.inner.get_at_most(b, k, max).await
    }
    async fn put(&self, b: &str, k: &str, body: Vec<u8>, t: &str) -> Result<(), pixq_jobs::store::StoreError> {
        self.inner.put(b, k, body, t).await
    }
    async fn list(&self, b: &str, p: &str) -> Result<Vec<pixq_jobs::store::ObjectMeta>, pixq_jobs::store::StoreError> {
        self.lists.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.list(b, p).await
    }
    async fn delete(&self, b: &str, k: &str) -> Result<(), pixq_jobs::store::StoreError> {
        self.inner.delete(b, k).await
    }
    async fn version_tag(&self, b: &str, k: &str) -> Option<String> {
        self.inner.version_tag(b, k).await
    }
}

/// The filesystem store gives no ETag: a source's digest is cached by its file's identity,
/// so a flood of requests for a large source reads it once (not its size per request), and
/// again only once its file changes.
#[tokio::test]
async fn on_the_fly_sources_are_read_once_until_their_file_changes() {
    let dir = tempfile::tempdir().unwrap();
    let mut backend =
        pixq_jobs::backend::open(&Connect { home: dir.path().join("home"), ..Connect::default() }).await.unwrap();
    let key = "images/big.png";
    let counting = Arc::new(CountingReads {
        inner: backend.store.clone(),
        key,
        reads: Default::default(),
        lists: Default::default(),
    });
    backend.store = counting.clone();
    let mut cfg = WebConfig::new(Signer::new(KEY).unwrap());
    cfg.inline_max_bytes = 1000;
    let router = pixq_web::router(App::new(&backend, cfg).unwrap());
    // Over the store's pack limit: a file, with a version tag.
    backend.store.put("pixq", key, sample("astronaut.png"), "image/png").await.unwrap();
    let path = Signer::new(KEY).unwrap().img_path("thumbnail:64", "big.png", None);
    let call = |router: Router| {
        let path = path.clone();
        async move { router.oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap().status() }
    };
    let statuses = futures::future::join_all((0..8).map(|_| call(router.clone()))).await;
    assert!(statuses.iter().all(|s| *s == StatusCode::ACCEPTED), "{statuses:?}");
    for _ in 0..3 {
        assert_eq!(call(router.clone()).await, StatusCode::ACCEPTED);
    }
    assert_eq!(counting.reads.load(std::sync::atomic::Ordering::SeqCst), 1, "read once for 11 requests");
    // New bytes of the same size under the key: read again.
    let mut changed = sample("astronaut.png");
    let last = changed.len() - 1;
    changed[last] ^= 0xFF;
    backend.store.put("pixq", key, changed, "image/png").await.unwrap();
    assert_eq!(call(router.clone()).await, StatusCode::ACCEPTED);
    assert_eq!(counting.reads.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[tokio::test]
async fn downloads_wait_for_room_in_their_memory_budget() {
    // 1 MB of downloads at once; a 700 KB input (a JPEG's first bytes, then filler: uploads
    // are sniffed, not decoded).
    let e = env(|c| {
        c.download_memory_mb = 1;
        c.download_wait = Duration::from_millis(1500);
    })
    .await;
    let mut big = sample("coffee.jpg")[..64].to_vec();
    big.resize(700 << 10, 0x5a);
    let (s, v) = e
        .json(
            "POST",
            "/api/batches",
            Some(json!({"pipeline": "thumbnail:64", "files": files(&[("a.jpg", big.len())])})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let batch = v["batch"].as_str().unwrap().to_string();
    let (s, v) = e.put(v["uploads"][0]["url"].as_str().unwrap(), big.clone()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let uri = format!("/api/batches/{batch}/files/0/input");
    let get = || e.router.clone().oneshot(Request::get(uri.clone()).body(Body::empty()).unwrap());
    // A client that has not taken its response holds 700 KB of the budget...
    let first = get().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(first.headers()[header::CONTENT_LENGTH], big.len().to_string().as_str());
    // ...so a second waits for room, and past the wait is told to come back.
    let (s, h, body) = e.call(Request::get(uri.clone()).body(Body::empty()).unwrap()).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{}", String::from_utf8_lossy(&body));
    assert_eq!(h[header::RETRY_AFTER], "5");
    // One waiting when the first is taken gets the room.
    let second = tokio::spawn(get());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!second.is_finished(), "served while the budget was held");
    assert_eq!(first.into_body().collect().await.unwrap().to_bytes().len(), big.len());
    let second = second.await.unwrap().unwrap();
    assert_eq!(second.status(), StatusCode::OK);
    assert_eq!(second.into_body().collect().await.unwrap().to_bytes().to_vec(), big);
    // A dropped response (the client went away) gives its room back too.
    let dropped = get().await.unwrap();
    drop(dropped);
    assert_eq!(e.call(Request::get(uri).body(Body::empty()).unwrap()).await.0, StatusCode::OK);
}

/// A router over a store that counts its listings, configured by `tune`, with one batch of
/// one announced file created; the batch's events path.
async fn counted_batch(tune: impl FnOnce(&mut WebConfig)) -> (tempfile::TempDir, Router, Arc<CountingReads>, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut backend =
        pixq_jobs::backend::open(&Connect { home: dir.path().join("home"), ..Connect::default() }).await.unwrap();
    let counting = Arc::new(CountingReads {
        inner: backend.store.clone(),
        key: "",
        reads: Default::default(),
        lists: Default::default(),
    });
    backend.store = counting.clone();
    let mut cfg = WebConfig::new(Signer::new(KEY).unwrap());
    tune(&mut cfg);
    let router = pixq_web::router(App::new(&backend, cfg).unwrap());
    let body = json!({"pipeline": "grayscale", "files": files(&[("a.jpg", 10)])}).to_string();
    let req = Request::post("/api/batches").header(header::CONTENT_TYPE, "application/json").body(Body::from(body));
    let r = router.clone().oneshot(req.unwrap()).await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let v: Value = serde_json::from_slice(&r.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let events = format!("/api/batches/{}/events", v["batch"].as_str().unwrap());
    (dir, router, counting, events)
}

/// However many event streams follow a batch, its status is read by one task, four times a
/// second: not by each stream.
#[tokio::test]
async fn event_streams_of_a_batch_share_one_reader_of_its_status() {
    let (_dir, router, counting, events) = counted_batch(|_| {}).await;
    // Listings (each status lists the batch's upload marks) while `n` streams are open and
    // read for 1.5 s.
    let listings = |n: usize| {
        let (router, events, counting) = (router.clone(), events.clone(), counting.clone());
        async move {
            let mut streams = Vec::new();
            for _ in 0..n {
                let r = router.clone().oneshot(Request::get(&events).body(Body::empty()).unwrap()).await.unwrap();
                assert_eq!(r.status(), StatusCode::OK);
                streams.push(r.into_body());
            }
            let before = counting.lists.load(std::sync::atomic::Ordering::SeqCst);
            let reading = streams.into_iter().map(|mut b| async move {
                let _ = tokio::time::timeout(Duration::from_millis(1500), async { while b.frame().await.is_some() {} })
                    .await;
            });
            futures::future::join_all(reading).await;
            counting.lists.load(std::sync::atomic::Ordering::SeqCst) - before
        }
    };
    let one = listings(1).await;
    let twenty = listings(20).await;
    assert!(one >= 3, "one stream read the status {one} times in 1.5 s");
    assert!(twenty <= 2 * one + 4, "twenty streams: {twenty} readings against {one} for one");
}

/// Entries of a ZIP with their data, as its central directory lists them, each checked
/// against its CRC (and against its data descriptor, for an entry that has one).
fn zip_entries(zip: &[u8]) -> Vec<(String, Vec<u8>)> {
    let le16 = |i: usize| u16::from_le_bytes([zip[i], zip[i + 1]]) as usize;
    let le32 = |i: usize| u32::from_le_bytes([zip[i], zip[i + 1], zip[i + 2], zip[i + 3]]);
    let end = zip.len() - 22;
    assert_eq!(le32(end), 0x0605_4b50, "an end record, no comment");
    let (count, mut at) = (le16(end + 10), le32(end + 16) as usize);
    let mut out = Vec::new();
    for _ in 0..count {
        assert_eq!(le32(at), 0x0201_4b50);
        let (flags, crc, size) = (le16(at + 8), le32(at + 16), le32(at + 20) as usize);
        let (name_len, extra, comment) = (le16(at + 28), le16(at + 30), le16(at + 32));
        let local = le32(at + 42) as usize;
        let name = String::from_utf8(zip[at + 46..at + 46 + name_len].to_vec()).unwrap();
        assert_eq!(le32(local), 0x0403_4b50, "{name}: a local header where the directory says");
        let start = local + 30 + le16(local + 26) + le16(local + 28);
        let data = zip[start..start + size].to_vec();
        assert_eq!(crc32fast::hash(&data), crc, "{name}: CRC");
        if flags & 8 != 0 {
            let d = start + size;
            assert_eq!((le32(d), le32(d + 4), le32(d + 8) as usize), (0x0807_4b50, crc, size), "{name}: descriptor");
        }
        out.push((name, data));
        at += 46 + name_len + extra + comment;
    }
    out
}

/// An output the store keeps as a file is sent in pieces within a window of the budget,
/// not read whole: two downloads of a 3+ MB output fit a 2 MB budget at once (a third
/// waits), and the ZIP streams it with the CRC of what it sent after it.
#[tokio::test]
async fn large_outputs_are_sent_from_their_files_in_a_window_of_the_budget() {
    let e = env(|c| {
        c.download_memory_mb = 2;
        c.download_wait = Duration::from_millis(800);
    })
    .await;
    let (stop, worker) = e.worker();
    let names = ["astronaut.png", "chelsea.jpg"];
    let photos: Vec<Vec<u8>> = names.iter().map(|n| sample(n)).collect();
    let list: Vec<(&str, usize)> = names.iter().zip(&photos).map(|(n, p)| (*n, p.len())).collect();
    let body = json!({"pipeline": "resize:1400:1400:fill,format:bmp", "files": files(&list)});
    let (s, v) = e.json("POST", "/api/batches", Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let batch = v["batch"].as_str().unwrap().to_string();
    for (i, p) in photos.iter().enumerate() {
        assert_eq!(e.put(v["uploads"][i]["url"].as_str().unwrap(), p.clone()).await.0, StatusCode::OK);
    }
    assert_eq!(e.json("POST", &format!("/api/batches/{batch}/start"), None).await.0, StatusCode::ACCEPTED);
    let (_, _, events) =
        e.call(Request::get(format!("/api/batches/{batch}/events")).body(Body::empty()).unwrap()).await;
    let text = String::from_utf8(events).unwrap();
    assert!(text.contains("event: done"), "{text}");
    stop.cancel();
    worker.await.unwrap();
    let uri = format!("/api/batches/{batch}/files/0/output");
    let get = || e.router.clone().oneshot(Request::get(uri.clone()).body(Body::empty()).unwrap());
    let first = get().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let len: u64 = first.headers()[header::CONTENT_LENGTH].to_str().unwrap().parse().unwrap();
    assert!(len > 3 << 20, "a 1400x1400 BMP: {len} bytes");
    // Not taken yet, each holds 1 MiB: a second fits, a third does not.
    let second = get().await.unwrap();
    assert_eq!(second.status(), StatusCode::OK);
    assert_eq!(get().await.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
    let a = first.into_body().collect().await.unwrap().to_bytes();
    let b = second.into_body().collect().await.unwrap().to_bytes();
    assert_eq!((a.len() as u64, &a[..2]), (len, &b"BM"[..]));
    assert_eq!(a, b);
    // The ZIP: the large output from its file, the other as well, each with its CRC.
    let (s, _, zip) = e.call(Request::get(format!("/api/batches/{batch}/zip")).body(Body::empty()).unwrap()).await;
    assert_eq!(s, StatusCode::OK);
    let entries = zip_entries(&zip);
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].1, a.to_vec());
    let (_, _, other) =
        e.call(Request::get(format!("/api/batches/{batch}/files/1/output")).body(Body::empty()).unwrap()).await;
    assert_eq!(entries[1].1, other);
}

/// A stream held for zero (behind a function, or past the cap) answers its first status and
/// starts no reader of it.
#[tokio::test]
async fn an_event_stream_held_for_zero_reads_the_status_once() {
    let (_dir, router, counting, events) = counted_batch(|c| c.events_hold = Some(Duration::ZERO)).await;
    let before = counting.lists.load(std::sync::atomic::Ordering::SeqCst);
    for _ in 0..5 {
        let r = router.clone().oneshot(Request::get(&events).body(Body::empty()).unwrap()).await.unwrap();
        let text = String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
        assert_eq!(text.matches("event: status").count(), 1, "{text}");
    }
    // One listing (of the upload marks) per status, and none after the streams ended.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(counting.lists.load(std::sync::atomic::Ordering::SeqCst) - before, 5);
}
