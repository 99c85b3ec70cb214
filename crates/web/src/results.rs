//! The batch API, reading side: follow a batch (status, server-sent events) and collect it
//! (each file, or all outputs as a ZIP). Batches are made and started in `api.rs`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use pixq_jobs::batch::{self, ManifestEntry};
use pixq_jobs::kernel::Format;
use pixq_jobs::keys;
use pixq_jobs::schema::{JobResult, ObjectRef, Status};
use pixq_jobs::store::StoreError;
use serde::Deserialize;

use crate::api::{WebBatch, read_web, redirect, safe_name};
use crate::{ApiError, App};

type AppState = State<Arc<App>>;

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
        // One listing of the batch's inputs, not a HEAD per file on every status.
        let listed = app.store.list(&app.bucket, &keys::inputs_prefix(batch)).await.map_err(ApiError::store)?;
        let present: std::collections::HashSet<&str> = listed.iter().map(|m| m.key.as_str()).collect();
        return Ok(w
            .files
            .iter()
            .enumerate()
            .filter(|(_, f)| present.contains(f.key.as_str()))
            .map(|(i, _)| i)
            .collect());
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
    // A slot held as long as the stream lives; without one, one status and the end.
    let slot = app.streams.clone().try_acquire_owned().ok();
    let hold = if slot.is_some() { app.config.events_hold } else { Some(Duration::ZERO) };
    let until = hold.map(|h| tokio::time::Instant::now() + h);
    let first: StatusRead = Ok((Arc::from(first.0.to_string()), first.1));
    let state = (app, batch, Some(first), None::<Arc<str>>, None, false);
    let stream =
        futures::stream::unfold(state, move |(app, batch, mut ready, mut last, mut watch, finished)| async move {
            if finished {
                return None;
            }
            loop {
                // `closed`: the reader is gone after this value (it sends before it ends).
                let (read, closed) = match ready.take() {
                    Some(r) => (r, false),
                    None => {
                        // Past the hold (at once for a stream held zero): no reader started.
                        if until.is_some_and(|t| tokio::time::Instant::now() >= t) {
                            return None;
                        }
                        // Every stream of a batch follows one reader of its status.
                        let rx = watch.get_or_insert_with(|| watch_status(&app, &batch));
                        let changed = match until {
                            Some(t) => tokio::time::timeout_at(t, rx.changed()).await.ok()?,
                            None => rx.changed().await,
                        };
                        match rx.borrow_and_update().clone() {
                            Some(r) => (r, changed.is_err()),
                            None if changed.is_err() => return None,
                            None => continue,
                        }
                    }
                };
                let Ok((text, done)) = read else {
                    let ev = Event::default().event("error").data("the batch's status could not be read");
                    return Some((Ok(ev), (app, batch, None, last, watch, true)));
                };
                if done {
                    let ev = Event::default().event("done").data(&*text);
                    return Some((Ok(ev), (app, batch, None, last, watch, true)));
                }
                if last.as_ref() != Some(&text) {
                    let mut ev = Event::default().event("status").data(&*text);
                    if last.is_none() {
                        ev = ev.retry(Duration::from_secs(1));
                    }
                    last = Some(text);
                    return Some((Ok(ev), (app, batch, None, last, watch, closed)));
                }
                if closed {
                    return None;
                }
            }
        });
    let stream = futures::StreamExt::map(stream, move |ev| {
        let _slot = &slot;
        ev
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// A batch's status as the event streams share it: its JSON text and whether it is done;
/// `Err` when it could not be read.
pub(crate) type StatusRead = Result<(Arc<str>, bool), ()>;

/// The readings of a batch's status reader (`None` before the first).
pub(crate) type StatusWatch = tokio::sync::watch::Receiver<Option<StatusRead>>;

/// The status of `batch`, read four times a second by one task for every event stream that
/// follows it (not by each stream). The task sends each reading (`None` before the first),
/// and ends after the batch is done, after a failed read, or at its first look with no
/// stream left; a stream that comes later starts a new one.
fn watch_status(app: &Arc<App>, batch: &str) -> StatusWatch {
    let mut map = app.watchers.lock().expect("status watchers");
    if let Some((_, rx)) = map.get(batch) {
        return rx.clone();
    }
    let (tx, rx) = tokio::sync::watch::channel(None);
    let id = WATCH_IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    map.insert(batch.to_string(), (id, rx.clone()));
    // Unlocked before the spawn: a runtime shutting down drops the task at once, and its
    // guard takes the lock.
    drop(map);
    // Its map entry goes with the task, however the task ends (a panic included), unless a
    // newer reader's has taken its place.
    let leave = Leave { app: app.clone(), batch: batch.to_string(), id };
    tokio::spawn(async move {
        let (app, batch) = (&leave.app, &leave.batch);
        loop {
            let read = tokio::time::timeout(STATUS_READ_LIMIT, status_json(app, batch)).await;
            let read: StatusRead = match read {
                Ok(Ok((body, done))) => Ok((Arc::from(body.to_string()), done)),
                Ok(Err(e)) => {
                    tracing::warn!(batch = %batch, error = ?e, "events: reading the status");
                    Err(())
                }
                Err(_) => {
                    tracing::warn!(batch = %batch, "events: reading the status took over {STATUS_READ_LIMIT:?}");
                    Err(())
                }
            };
            let last = !matches!(read, Ok((_, false)));
            tx.send_replace(Some(read));
            if last {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            // The map's own receiver is one; under its lock no stream can join meanwhile.
            let mut map = app.watchers.lock().expect("status watchers");
            if tx.receiver_count() <= 1 {
                map.remove(batch);
                return;
            }
        }
    });
    rx
}

/// Longest one reading of a status may take before its streams are told it failed.
const STATUS_READ_LIMIT: Duration = Duration::from_secs(30);

static WATCH_IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Removes a status reader's map entry when the reader ends.
struct Leave {
    app: Arc<App>,
    batch: String,
    id: u64,
}

impl Drop for Leave {
    fn drop(&mut self) {
        if let Ok(mut map) = self.app.watchers.lock()
            && map.get(&self.batch).is_some_and(|(id, _)| *id == self.id)
        {
            map.remove(&self.batch);
        }
    }
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
    let held = crate::download::read(&app, &object.key).await.map_err(|e| e.answer("the file is gone"))?;
    let mime = Format::sniff(held.head()).map(|f| f.mime()).unwrap_or("application/octet-stream");
    let mut r = Response::new(held.into_body());
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
    let body = crate::zip::stream(app.clone(), files);
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
