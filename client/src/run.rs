//! The subcommands, on the embedded default (`--home`, default `.pixq/`).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use indicatif::{ProgressBar, ProgressStyle};
use pixq_jobs::batch::{self, BatchManifest, BatchStatus, ManifestEntry};
use pixq_jobs::kernel::Pipeline;
use pixq_jobs::local::{LOCAL_BUCKET, LocalHome};
use pixq_jobs::queue::Queue;
use pixq_jobs::queue::sqlite::{QueueConfig, SqliteQueue};
use pixq_jobs::schema::{Job, ObjectRef, OutputLocation, Status};
use pixq_jobs::store::ObjectStore;
use pixq_jobs::store::fs::FsStore;
use pixq_jobs::worker::{self, Event, WorkerConfig};
use pixq_jobs::{ids, keys};
use tokio_util::sync::CancellationToken;

use crate::args::{Cli, Command, DlqAction};
use crate::inputs;

/// Runs a command; returns the exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    let home = LocalHome::new(&cli.home);
    let store = || Arc::new(home.store());
    let queue = || -> anyhow::Result<Arc<SqliteQueue>> {
        Ok(Arc::new(
            home.queue(QueueConfig::default())
                .with_context(|| format!("opening the queue {}", home.queue_path().display()))?,
        ))
    };
    match cli.command {
        Command::Ops => {
            print_ops();
            Ok(0)
        }
        Command::Process { paths, ops, out, workers } => {
            process(&home, store(), queue()?, &paths, &ops, &out, workers).await
        }
        Command::Submit { paths, ops } => {
            let m = submit(store().as_ref(), queue()?.as_ref(), &paths, &ops).await?;
            eprintln!(
                "submitted {} jobs; run `pixq-worker --home {}` to process them",
                m.jobs.len(),
                home.root().display()
            );
            println!("{}", m.batch);
            Ok(0)
        }
        Command::Status { batch } => status(&home, store().as_ref(), queue()?.as_ref(), &batch).await,
        Command::Fetch { batch, out } => {
            let store = store();
            let manifest = manifest(store.as_ref(), &home, &batch).await?;
            let st = batch::batch_status(store.as_ref(), LOCAL_BUCKET, &batch).await?;
            let written = fetch(store.as_ref(), &manifest, &st, &out).await?;
            let pending = manifest.jobs.len() - st.results.len();
            println!(
                "fetched {written} outputs into {} ({} failed, {pending} not finished)",
                out.display(),
                st.failed()
            );
            Ok(if st.failed() > 0 || pending > 0 { 1 } else { 0 })
        }
        Command::Dlq { action } => dlq(queue()?.as_ref(), action).await,
    }
}

fn print_ops() {
    println!("Pipeline: comma-separated steps, name[:arg[:arg]], applied in order.\n");
    for s in pixq_jobs::kernel::op::STEPS {
        println!("  {:<28} {}\n  {:<28} e.g. {}\n", s.syntax, s.about, "", s.example);
    }
}

fn parse_pipeline(ops: &str) -> anyhow::Result<Pipeline> {
    Pipeline::parse(ops).map_err(|e| anyhow!("bad --ops: {e}"))
}

/// Uploads the inputs, writes the batch manifest and enqueues one job per image.
async fn submit(store: &FsStore, queue: &SqliteQueue, paths: &[PathBuf], ops: &str) -> anyhow::Result<BatchManifest> {
    let pipeline = parse_pipeline(ops)?;
    let files = inputs::collect(paths)?;
    let batch = ids::new_batch_id();
    let output = OutputLocation { bucket: LOCAL_BUCKET.into(), prefix: "outputs/".into() };
    let bar = bar(files.len() as u64, "uploading");
    let mut jobs: Vec<Job> = Vec::with_capacity(files.len());
    let mut entries = Vec::with_capacity(files.len());
    for (i, f) in files.iter().enumerate() {
        let bytes = tokio::fs::read(f).await.with_context(|| format!("reading {}", f.display()))?;
        let digest = keys::content_digest(&bytes);
        let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut key = format!("{}{i:05}-{name}", keys::inputs_prefix(&batch));
        if keys::validate_key(&key).is_err() {
            key = format!("{}{i:05}", keys::inputs_prefix(&batch));
        }
        store
            .put(LOCAL_BUCKET, &key, bytes, "application/octet-stream")
            .await
            .with_context(|| format!("uploading {}", f.display()))?;
        let input = ObjectRef { bucket: LOCAL_BUCKET.into(), key };
        let job = batch::new_job(&batch, i, input.clone(), Some(digest), &pipeline, &output);
        entries.push(ManifestEntry { job_id: job.id.clone(), source: f.display().to_string(), input });
        jobs.push(job);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let manifest = BatchManifest {
        batch: batch.clone(),
        pipeline: pipeline.canonical(),
        created_at_ms: pixq_jobs::clock::now_ms(),
        jobs: entries,
    };
    batch::write_manifest(store, LOCAL_BUCKET, &manifest).await.context("writing the batch manifest")?;
    batch::enqueue(queue, &jobs, queue.config().fifo).await.context("enqueueing jobs")?;
    Ok(manifest)
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let b = ProgressBar::new(len);
    let style = ProgressStyle::with_template("{spinner} {prefix} [{bar:30}] {pos}/{len} {msg} {per_sec} ETA {eta}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    b.set_style(style);
    b.set_prefix(what.to_string());
    b
}

/// The main job: submit, run workers in-process with a progress bar, fetch, summarise.
async fn process(
    home: &LocalHome,
    store: Arc<FsStore>,
    queue: Arc<SqliteQueue>,
    paths: &[PathBuf],
    ops: &str,
    out: &Path,
    workers: Option<usize>,
) -> anyhow::Result<i32> {
    let started = Instant::now();
    let manifest = submit(store.as_ref(), queue.as_ref(), paths, ops).await?;
    let total = manifest.jobs.len();
    let ours: HashSet<String> = manifest.jobs.iter().map(|j| j.job_id.clone()).collect();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    // Short polls: the loop ends as soon as the last job is in, and shutdown waits for one poll.
    let mut cfg = WorkerConfig {
        events: Some(tx),
        wait: Duration::from_millis(200),
        backoff_base: Duration::from_millis(500),
        ..WorkerConfig::default()
    };
    if let Some(n) = workers {
        cfg.concurrency = n.max(1);
    }
    let shutdown = CancellationToken::new();
    let q: Arc<dyn Queue> = queue.clone();
    let s: Arc<dyn ObjectStore> = store.clone();
    let worker = tokio::spawn(worker::run(q, s, cfg, shutdown.clone()));

    let bar = bar(total as u64, "processing");
    let (mut ok, mut failed) = (HashSet::new(), HashSet::new());
    let mut interrupted = false;
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    tick.tick().await;
    while ok.len() + failed.len() < total {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(Event::Done { job, .. }) if ours.contains(&job) => { ok.insert(job); }
                Some(Event::Failed { job: Some(job), .. }) if ours.contains(&job) => { failed.insert(job); }
                Some(_) => {}
                None => break,
            },
            // Other workers (pixq-worker processes on the same home) may finish our jobs too.
            _ = tick.tick() => {
                let st = batch::batch_status(store.as_ref(), LOCAL_BUCKET, &manifest.batch).await?;
                for r in st.results {
                    if r.status == Status::Ok { ok.insert(r.job_id); } else { failed.insert(r.job_id); }
                }
            }
            _ = tokio::signal::ctrl_c() => { interrupted = true; break; }
        }
        bar.set_position((ok.len() + failed.len()) as u64);
        bar.set_message(if failed.is_empty() { String::new() } else { format!("({} failed)", failed.len()) });
    }
    shutdown.cancel();
    let _ = worker.await;
    bar.finish_and_clear();
    if interrupted {
        eprintln!(
            "pixq: interrupted with {} of {total} jobs finished; the rest stay queued in {}.\n      Finish them with `pixq-worker --home {0}` and collect with `pixq fetch {} --out {}`.",
            ok.len() + failed.len(),
            home.root().display(),
            manifest.batch,
            out.display()
        );
        return Ok(130);
    }
    let st = batch::batch_status(store.as_ref(), LOCAL_BUCKET, &manifest.batch).await?;
    let written = fetch(store.as_ref(), &manifest, &st, out).await?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "pixq: {total} images in {secs:.1}s ({:.1}/s): {} ok ({} reused from earlier runs), {} failed; {written} written to {}",
        total as f64 / secs.max(1e-9),
        st.ok(),
        st.reused(),
        st.failed(),
        out.display()
    );
    println!("batch {}", manifest.batch);
    print_failures(&manifest, &st);
    Ok(if st.failed() > 0 { 1 } else { 0 })
}

fn print_failures(manifest: &BatchManifest, st: &BatchStatus) {
    let sources: HashMap<&str, &str> = manifest.jobs.iter().map(|j| (j.job_id.as_str(), j.source.as_str())).collect();
    for r in st.results.iter().filter(|r| r.status == Status::Failed) {
        let src = sources.get(r.job_id.as_str()).copied().unwrap_or(r.input.key.as_str());
        println!("  failed: {src}: {}", r.reason.as_deref().unwrap_or("no reason recorded"));
    }
}

/// Downloads every ok output of a batch into `out` as `<stem>.<ext>`.
async fn fetch(store: &FsStore, manifest: &BatchManifest, st: &BatchStatus, out: &Path) -> anyhow::Result<usize> {
    tokio::fs::create_dir_all(out).await.with_context(|| format!("creating {}", out.display()))?;
    let by_job: HashMap<&str, _> = st.results.iter().map(|r| (r.job_id.as_str(), r)).collect();
    let mut sources = Vec::new();
    let mut exts = Vec::new();
    let mut objects = Vec::new();
    for e in &manifest.jobs {
        if let Some(r) = by_job.get(e.job_id.as_str()).filter(|r| r.status == Status::Ok)
            && let Some(o) = r.outputs.first()
        {
            sources.push(PathBuf::from(&e.source));
            exts.push(o.format.extension());
            objects.push(o.object.clone());
        }
    }
    let names = inputs::output_names(&sources, &exts);
    for (name, obj) in names.iter().zip(&objects) {
        let bytes = store.get(&obj.bucket, &obj.key).await.with_context(|| format!("downloading {}", obj.key))?;
        let path = out.join(name);
        tokio::fs::write(&path, bytes).await.with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(names.len())
}

async fn manifest(store: &FsStore, home: &LocalHome, batch: &str) -> anyhow::Result<BatchManifest> {
    batch::read_manifest(store, LOCAL_BUCKET, batch)
        .await?
        .ok_or_else(|| anyhow!("unknown batch {batch} (no manifest under {})", home.root().display()))
}

async fn status(home: &LocalHome, store: &FsStore, queue: &SqliteQueue, batch: &str) -> anyhow::Result<i32> {
    let m = manifest(store, home, batch).await?;
    let st = batch::batch_status(store, LOCAL_BUCKET, batch).await?;
    let pending = m.jobs.len().saturating_sub(st.results.len());
    println!(
        "batch {batch}: {} jobs, {} ok ({} reused), {} failed, {pending} pending  [{}]",
        m.jobs.len(),
        st.ok(),
        st.reused(),
        st.failed(),
        m.pipeline
    );
    print_failures(&m, &st);
    let c = queue.counts().await?;
    println!(
        "queue: {} visible, {} in flight, {} delayed, {} dead-lettered",
        c.visible, c.in_flight, c.delayed, c.dead
    );
    Ok(0)
}

async fn dlq(queue: &SqliteQueue, action: DlqAction) -> anyhow::Result<i32> {
    match action {
        DlqAction::List { max } => {
            let dead = queue.dead_letters(max).await?;
            if dead.is_empty() {
                println!("the dead-letter queue is empty");
            }
            for d in dead {
                let what = match Job::from_json(&d.body) {
                    Ok(j) => format!("job {} ({})", j.id, j.input.key),
                    Err(_) => format!("message {}", d.id),
                };
                println!("{what}: {} [received {} times]", d.reason, d.receive_count);
            }
        }
        DlqAction::Redrive { max } => {
            let n = queue.redrive(max).await?;
            println!("moved {n} messages back to the queue");
        }
    }
    Ok(0)
}
