//! The subcommands, on the embedded default (`--home`, default `.pixq/`) or on AWS
//! (`--target aws`: S3 + SQS of a deployed stack).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use indicatif::{ProgressBar, ProgressStyle};
use pixq_jobs::backend::{Lane, Target};
use pixq_jobs::batch::{self, BatchManifest, BatchStatus, ManifestEntry};
use pixq_jobs::kernel::{Pipeline, Recipe};
use pixq_jobs::process::ProcessConfig;
use pixq_jobs::queue::Queue;
use pixq_jobs::queue::QueueConfig;
use pixq_jobs::schema::{Job, ObjectRef, OutputInfo, OutputLocation, Status};
use pixq_jobs::store::ObjectStore;
use pixq_jobs::worker::{self, Event, WorkerConfig};
use pixq_jobs::{ids, keys};
use tokio_util::sync::CancellationToken;

use crate::args::{DlqAction, Global, JobsCommand, WatermarkAction};
use crate::inputs;
use pixq_jobs::route::{FunctionFit, Route, RouteChoice};

/// The store and queue a command talks to (step two of configuration: built objects).
struct Backend {
    store: Arc<dyn ObjectStore>,
    queue: Arc<dyn Queue>,
    /// Bucket for inputs, outputs, records and manifests.
    bucket: String,
    /// In-process workers by default (local) or none (aws: deployed workers).
    default_workers: usize,
    /// The embedded default (inputs are copies on this disk).
    local: bool,
    /// Where things are, for messages.
    location: String,
    /// How to run separate workers against it, for messages.
    worker_hint: String,
}

async fn backend(cli: &Global, queue: QueueConfig) -> anyhow::Result<Backend> {
    let opened = pixq_jobs::backend::open(&cli.connect.connect(Lane::Light, queue)?).await?;
    let local = opened.target == Target::Local;
    let Some(bucket) = opened.bucket else {
        bail!(
            "--target aws needs a bucket: pass --stack-outputs FILE (from `sam list stack-outputs --stack-name pixq --output json`) or --bucket"
        );
    };
    Ok(Backend {
        store: opened.store,
        queue: opened.queue,
        bucket,
        default_workers: if local { pixq_jobs::cores() } else { 0 },
        local,
        location: opened.location,
        worker_hint: opened.worker_hint,
    })
}

/// How often `pixq process`'s workers look at the queue file for what its own sends do not
/// wake them for: other processes' messages, retries coming due.
const PROCESS_POLL: Duration = Duration::from_millis(250);

/// Runs a command on a queue and a store; returns the exit code.
pub async fn run(cli: &Global, command: JobsCommand) -> anyhow::Result<i32> {
    let json = cli.json;
    // `pixq process` wakes its own workers as it sends; the file is looked at for other
    // processes' messages and for retries coming due, which can wait a quarter second
    // (a look every 20 ms was a write transaction every 20 ms of the run).
    let queue = match &command {
        JobsCommand::Process { .. } => QueueConfig { poll_interval: PROCESS_POLL, ..QueueConfig::default() },
        _ => QueueConfig::default(),
    };
    let b = backend(cli, queue).await?;
    match command {
        JobsCommand::Process {
            paths,
            ops,
            out,
            overwrite,
            workers,
            timeout_secs,
            keep_inputs,
            memory_mb,
            max_megapixels,
            max_frames,
            max_animation_megapixels,
            job_timeout_secs,
            route,
        } => {
            let how = ProcessOptions {
                workers: workers.unwrap_or(b.default_workers),
                timeout: Duration::from_secs(timeout_secs),
                drop_inputs: b.local && !keep_inputs,
                overwrite,
                memory_mb: memory_mb.unwrap_or_else(pixq_jobs::process::default_memory_mb),
                process: ProcessConfig {
                    limits: pixq_jobs::kernel::Limits::default()
                        .max_pixels((max_megapixels * 1e6) as u64)
                        .max_frames(max_frames)
                        .max_animation_pixels((max_animation_megapixels * 1e6) as u64),
                    job_timeout: Duration::from_secs(job_timeout_secs.max(1)),
                    ..ProcessConfig::default()
                },
            };
            // Workers in this process take every job from the one queue they poll: nothing to route.
            let routing =
                if how.workers > 0 { Arc::new(Routing::One(b.queue.clone())) } else { routing(cli, &b, route).await? };
            process(&b, &routing, &paths, &ops, &out, &how, json).await
        }
        JobsCommand::Submit { paths, ops, route } => {
            let files = inputs::collect(&paths)?;
            let routing = routing(cli, &b, route).await?;
            let (m, routed) = submit(&b, &routing, &files, &parse_recipe(&ops)?).await?;
            eprintln!(
                "submitted {} jobs to {}; workers: `{}` (or the deployed stack)",
                m.jobs.len(),
                b.location,
                b.worker_hint
            );
            eprint!("{}", routed.report(&m, routing.group()).await);
            println!("{}", m.batch);
            Ok(0)
        }
        JobsCommand::Status { batch } => status(&b, &batch, json).await,
        JobsCommand::Fetch { batch, out, overwrite } => {
            let manifest = manifest(&b, &batch).await?;
            let st = batch::batch_status(b.store.as_ref(), &b.bucket, &batch).await?;
            // Names that already hold this batch's output (an interrupted run placed them)
            // are done, not taken.
            let mut done = HashSet::new();
            if !overwrite {
                let by_job: HashMap<&str, _> = st.results.iter().map(|r| (r.job_id.as_str(), r)).collect();
                let mut names = Vec::new();
                for (job, files) in entry_files(&manifest) {
                    let outputs = by_job.get(job.as_str()).filter(|r| r.status == Status::Ok).map(|r| &r.outputs);
                    let mut placed = 0;
                    for (i, name) in files.iter().enumerate() {
                        let path = out.join(name);
                        let output = outputs.and_then(|o| o.get(i));
                        if let Some(o) = output.filter(|o| path.symlink_metadata().is_ok_and(|m| m.len() == o.bytes)) {
                            let bytes = b.store.get(&o.object.bucket, &o.object.key).await?;
                            if same_file_bytes(&path, &bytes) {
                                placed += 1;
                                continue;
                            }
                        }
                        names.push(name.clone());
                    }
                    if placed == files.len() {
                        done.insert(job);
                    }
                }
                refuse_existing(&out, &names)?;
            }
            let written = done.len() + fetch(&b, &manifest, &st, &out, overwrite, &done, Vec::new()).await?;
            let pending = manifest.jobs.len().saturating_sub(st.results.len());
            println!(
                "fetched {written} outputs into {} ({} failed, {pending} not finished)",
                out.display(),
                st.failed()
            );
            Ok(if st.failed() > 0 || pending > 0 { 1 } else { 0 })
        }
        JobsCommand::Dlq { action } => dlq(b.queue.as_ref(), action, json).await,
        JobsCommand::Watermark { action } => watermark(&b, action, json).await,
    }
}

pub fn print_ops() {
    println!("Pipeline: comma-separated steps, name[:arg[:arg]], applied in order.\n");
    for s in pixq_jobs::kernel::op::STEPS {
        println!("  {:<28} {}\n  {:<28} e.g. {}\n", s.syntax, s.about, "", s.example);
    }
    println!(
        "Variants: name=steps;name=steps... makes several named outputs from one decode, \
         fetched as <stem>.<name>.<ext>.\n\
         Animated GIF/WebP stay animated in GIF or WebP output (delays and loop count kept; \
         at most {} frames and {} MP over all frames); frame:N or another format takes one frame.",
        pixq_jobs::kernel::Limits::default().max_frames,
        pixq_jobs::kernel::Limits::default().max_animation_pixels / 1_000_000
    );
}

fn parse_recipe(ops: &str) -> anyhow::Result<Recipe> {
    Recipe::parse(ops).map_err(|e| anyhow!("bad --ops: {e}"))
}

/// The file names of every job's outputs in `--out`: one, or one per variant in order.
fn entry_files(m: &BatchManifest) -> Vec<(String, Vec<String>)> {
    entry_names(m)
        .into_iter()
        .zip(&m.jobs)
        .map(|((job, name), e)| (job, if e.variant_files.is_empty() { vec![name] } else { e.variant_files.clone() }))
        .collect()
}

/// The output name of every job of a manifest (assigned at submit; computed the same way
/// for manifests written before names were stored).
fn entry_names(m: &BatchManifest) -> Vec<(String, String)> {
    let sources: Vec<PathBuf> = m.jobs.iter().map(|e| PathBuf::from(&e.source)).collect();
    let pipeline = Pipeline::parse(&m.pipeline).unwrap_or_default();
    // From the names alone: a manifest's sources are paths on whatever machine submitted it
    // (a device or a FIFO here).
    let exts: Vec<String> = sources.iter().map(|p| inputs::output_ext_of_name(&pipeline, p)).collect();
    let fallback = inputs::output_names(&sources, &exts);
    m.jobs.iter().zip(fallback).map(|(e, f)| (e.job_id.clone(), e.output_name.clone().unwrap_or(f))).collect()
}

/// Refuses to go on when any of `names` already exists in `out`: pixq never replaces a
/// file it did not write in this run unless `--overwrite` says so (`--out` may well be the
/// folder the photos came from).
fn refuse_existing(out: &Path, names: &[String]) -> anyhow::Result<()> {
    let taken: Vec<&String> = names.iter().filter(|n| out.join(n).symlink_metadata().is_ok()).collect();
    if let Some(first) = taken.first() {
        bail!(
            "{} output file{} already exist{} in {} (first: {first}); nothing was replaced. Pass --overwrite to replace them, or choose another --out folder",
            taken.len(),
            if taken.len() == 1 { "" } else { "s" },
            if taken.len() == 1 { "s" } else { "" },
            out.display()
        );
    }
    Ok(())
}

/// Uploads the inputs, writes the batch manifest and enqueues one job per image.
async fn submit(
    b: &Backend,
    routing: &Arc<Routing>,
    files: &[PathBuf],
    recipe: &Recipe,
) -> anyhow::Result<(BatchManifest, Routed)> {
    let manifest = plan_batch(b, files, recipe);
    batch::write_manifest(b.store.as_ref(), &b.bucket, &manifest).await.context("writing the batch manifest")?;
    let routed = upload_and_enqueue(
        b.store.clone(),
        routing.clone(),
        files.to_vec(),
        manifest.clone(),
        recipe.clone(),
        true,
        None,
        false,
    )
    .await?;
    Ok((manifest, routed))
}

/// Where a command's jobs go: one queue, or each job to the Lambda's or the heavy queue
/// by [`FunctionFit::route_input`].
enum Routing {
    /// Every job here.
    One(Arc<dyn Queue>),
    /// Every job on the heavy queue (`--route ec2`); `group` is the stack's worker group.
    Heavy { queue: Arc<dyn Queue>, group: Option<String> },
    /// Each job where it fits.
    Split {
        light: Arc<dyn Queue>,
        heavy: Arc<dyn Queue>,
        fit: FunctionFit,
        limits: pixq_jobs::kernel::Limits,
        group: Option<String>,
    },
}

impl Routing {
    fn queue(&self, route: Option<Route>) -> &Arc<dyn Queue> {
        match (self, route) {
            (Routing::One(q), _) | (Routing::Heavy { queue: q, .. }, _) => q,
            (Routing::Split { heavy, .. }, Some(Route::Ec2)) => heavy,
            (Routing::Split { light, .. }, _) => light,
        }
    }

    fn route(&self, bytes: &[u8], recipe: &Recipe) -> Option<pixq_jobs::route::Routed> {
        match self {
            Routing::One(_) => None,
            Routing::Heavy { .. } => Some(pixq_jobs::route::Routed { route: Route::Ec2, reason: "--route ec2".into() }),
            Routing::Split { fit, limits, .. } => Some(fit.route_input(bytes, &recipe.pipelines(), limits)),
        }
    }

    /// The heavy queue's worker group, when jobs can go there.
    fn group(&self) -> Option<&str> {
        match self {
            Routing::One(_) => None,
            Routing::Heavy { group, .. } | Routing::Split { group, .. } => group.as_deref(),
        }
    }
}

/// Builds the routing `--route` asks for. The embedded default has one queue; on AWS, `auto`
/// needs the stack's heavy queue (without it, or with --queue-url, every job goes to the one
/// queue) and the function's limits from the stack outputs.
async fn routing(cli: &Global, b: &Backend, choice: RouteChoice) -> anyhow::Result<Arc<Routing>> {
    if b.local || cli.connect.queue_url.is_some() {
        return Ok(Arc::new(Routing::One(b.queue.clone())));
    }
    let stack = pixq_jobs::backend::StackOutputs::read(cli.connect.stack_outputs.as_deref())?;
    let open_heavy = || async {
        let c = cli.connect.connect(Lane::Heavy, QueueConfig::default())?;
        anyhow::Ok(pixq_jobs::backend::open(&c).await?.queue)
    };
    Ok(Arc::new(match choice {
        RouteChoice::Only(Route::Lambda) => Routing::One(b.queue.clone()),
        RouteChoice::Only(Route::Ec2) => {
            Routing::Heavy { queue: open_heavy().await.context("--route ec2")?, group: stack.worker_group.clone() }
        }
        RouteChoice::Auto if stack.heavy_queue_url.is_none() => Routing::One(b.queue.clone()),
        RouteChoice::Auto => {
            let (memory_mb, timeout) = match (stack.processor_memory_mb, stack.processor_timeout_secs) {
                (Some(m), Some(t)) => (m, t),
                _ => {
                    eprintln!(
                        "pixq: the stack outputs name no ProcessorMemorySize/ProcessorTimeout (an older stack?): \
                         routing as for the template's defaults, 2048 MB and 60 s"
                    );
                    (2048, 60)
                }
            };
            Routing::Split {
                light: b.queue.clone(),
                heavy: open_heavy().await.context("opening the heavy queue for --route auto")?,
                fit: FunctionFit { memory_mb, timeout: Duration::from_secs(timeout) },
                limits: pixq_jobs::kernel::Limits::default(),
                group: stack.worker_group.clone(),
            }
        }
    }))
}

/// What routing did with a batch's jobs.
#[derive(Debug, Default)]
struct Routed {
    /// Jobs routed to the function.
    lambda: usize,
    /// Jobs routed to the heavy queue: (index in the manifest, why).
    ec2: Vec<(usize, String)>,
}

impl Routed {
    /// Where the jobs went, and what to expect of the heavy queue's workers (`group`), as
    /// lines for stderr (none when every job went to the function).
    async fn report(&self, m: &BatchManifest, group: Option<&str>) -> String {
        use std::fmt::Write;
        let mut t = String::new();
        if self.ec2.is_empty() {
            return t;
        }
        let fleet = Fleet::probe(group).await;
        let _ = writeln!(
            t,
            "routed: {} jobs to the Lambda function, {} to the EC2 workers' heavy queue:",
            self.lambda,
            self.ec2.len()
        );
        for (i, why) in self.ec2.iter().take(5) {
            let _ = writeln!(t, "  {}: {}", inputs::shown(&m.jobs[*i].source), inputs::shown(why));
        }
        if self.ec2.len() > 5 {
            let _ = writeln!(t, "  ... and {} more", self.ec2.len() - 5);
        }
        let _ = writeln!(t, "  {}", fleet.describe());
        t
    }
}

/// What the heavy queue's Auto Scaling group is doing when heavy jobs are queued.
#[derive(Debug)]
enum Fleet {
    /// Its size could not be read (why).
    Unknown(String),
    /// Its desired capacity and in-service instances (read with the `ec2` feature).
    #[cfg_attr(not(feature = "ec2"), allow(dead_code))]
    Size { group: String, desired: i32, in_service: usize },
}

/// How long the group takes to leave zero: the from-zero alarm (one or two 1-minute
/// periods), the instance launch and its boot (the loader fetching the worker).
const SCALE_OUT_FROM_ZERO: &str = "about 2 to 4 minutes (alarm, launch, boot)";

impl Fleet {
    /// Reads the group's size, when there is a group and this pixq can ask.
    async fn probe(group: Option<&str>) -> Fleet {
        let Some(group) = group else {
            return Fleet::Unknown("the stack outputs name no WorkerGroupName".into());
        };
        #[cfg(feature = "ec2")]
        {
            match crate::group::capacity(group).await {
                Ok((desired, in_service)) => Fleet::Size { group: group.to_string(), desired, in_service },
                Err(e) => Fleet::Unknown(format!("{e:#}")),
            }
        }
        #[cfg(not(feature = "ec2"))]
        {
            Fleet::Unknown(format!("group {group}: this pixq is built without the `ec2` feature"))
        }
    }

    fn describe(&self) -> String {
        match self {
            Fleet::Size { group, desired: 0, in_service: 0 } => format!(
                "the worker group {group} is at zero: it scales out {SCALE_OUT_FROM_ZERO} after jobs wait; \
                 `pixq ec2 up --desired N` starts workers at once"
            ),
            Fleet::Size { group, desired, in_service: 0 } => format!(
                "the worker group {group} is starting {desired} worker(s): launch and boot take 1 to 3 minutes; \
                 `pixq ec2 status` shows them"
            ),
            Fleet::Size { group, desired, in_service } => format!(
                "the worker group {group} has {in_service} worker(s) in service (desired {desired}); \
                 it scales on the queue's backlog per worker"
            ),
            Fleet::Unknown(why) => format!(
                "the worker group's size is unknown ({why}); from zero it scales out {SCALE_OUT_FROM_ZERO} \
                 after jobs wait; `pixq ec2 status` shows it"
            ),
        }
    }
}

/// A batch decided from the file list alone: its id, and per file the job id, the input key
/// and the output name. Nothing is read or written yet.
fn plan_batch(b: &Backend, files: &[PathBuf], recipe: &Recipe) -> BatchManifest {
    // Variants: each job's files share a stem (names made unique over one extension, then
    // the extension dropped) and are `<stem>.<variant>.<ext>`.
    let variants = recipe.variants();
    let exts: Vec<String> = if variants.is_empty() {
        files.iter().map(|f| inputs::output_ext(recipe.first(), f)).collect()
    } else {
        vec!["v".to_string(); files.len()]
    };
    let names: Vec<String> = inputs::output_names(files, &exts)
        .into_iter()
        .map(|n| if variants.is_empty() { n } else { n.strip_suffix(".v").unwrap_or(&n).to_string() })
        .collect();
    let batch = ids::new_batch_id();
    let jobs = files
        .iter()
        .zip(names)
        .enumerate()
        .map(|(i, (f, output_name))| {
            let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let mut key = format!("{}{i:05}-{name}", keys::inputs_prefix(&batch));
            if keys::validate_key(&key).is_err() {
                key = format!("{}{i:05}", keys::inputs_prefix(&batch));
            }
            ManifestEntry {
                job_id: format!("{batch}-{i:06}"),
                source: f.display().to_string(),
                input: ObjectRef { bucket: b.bucket.clone(), key },
                variant_files: variants
                    .iter()
                    .map(|v| format!("{output_name}.{}.{}", v.name, inputs::output_ext(&v.pipeline, f)))
                    .collect(),
                output_name: Some(output_name),
            }
        })
        .collect();
    BatchManifest { batch, pipeline: recipe.canonical(), created_at_ms: pixq_jobs::clock::now_ms(), jobs }
}

/// Inputs read, hashed and uploaded per chunk (32 at a time, so the embedded store commits
/// them in groups), largest first, each chunk enqueued as soon as it is stored: workers start
/// on the first images (a first chunk of four) while later ones are still being read.
/// `first_queued` fires once the first chunk is queued (or the upload ends). With
/// `read_first` (a worker in this process takes the first job), the first file linked is
/// also read ahead by the store (`ObjectStore::read_ahead`) while the chunk is linked and
/// the queue of a fresh home is made.
#[allow(clippy::too_many_arguments)]
async fn upload_and_enqueue(
    store: Arc<dyn ObjectStore>,
    routing: Arc<Routing>,
    files: Vec<PathBuf>,
    manifest: BatchManifest,
    recipe: Recipe,
    progress: bool,
    mut first_queued: Option<tokio::sync::oneshot::Sender<()>>,
    read_first: bool,
) -> anyhow::Result<Routed> {
    let mut routed = Routed::default();
    const CHUNK: usize = 128;
    const FIRST_CHUNK: usize = 4;
    let bucket = manifest.jobs.first().map(|e| e.input.bucket.clone()).unwrap_or_default();
    let output = OutputLocation { bucket: bucket.clone(), prefix: "outputs/".into() };
    let bar = if progress { bar(files.len() as u64, "uploading") } else { ProgressBar::hidden() };
    let slots = Arc::new(tokio::sync::Semaphore::new(32));
    // Inputs the store commits together (the embedded store's pack): one write per chunk.
    let small = store.small_object_max();
    let mut enqueued = 0;
    // Largest first over the whole batch (file size standing for work; a stat each, from
    // the folder listing's cache): the last jobs to start are the shortest, so lanes finish
    // close together instead of one running a photo alone. The first chunk is small, so the
    // workers start after a few uploads rather than a whole chunk's.
    let mut order: Vec<(u64, usize)> =
        files.iter().enumerate().map(|(i, f)| (std::fs::metadata(f).map_or(0, |m| m.len()), i)).collect();
    order.sort_by_key(|&(size, i)| (std::cmp::Reverse(size), i));
    let first = FIRST_CHUNK.min(order.len());
    let chunks = std::iter::once(&order[..first]).chain(order[first..].chunks(CHUNK));
    for chunk in chunks.filter(|c| !c.is_empty()) {
        let mut uploads = tokio::task::JoinSet::new();
        // A file on the store's own disk, too large for its pack, is linked unread (all of
        // the chunk's at once, one folder sync); the worker hashes it once (and looks for an
        // earlier output then). Everything else is read and hashed here, so the job carries
        // its digest.
        let (to_link, to_read): (Vec<_>, Vec<_>) = chunk.iter().copied().partition(|&(size, _)| {
            // One over the input limit is read only up to it (the job then fails for its
            // size), never linked: a link that falls back to a copy would read it whole.
            store.links_files() && size > LINK_ABOVE as u64 && size <= MAX_INPUT
        });
        let linking = (!to_link.is_empty()).then(|| {
            let (store, bucket) = (store.clone(), bucket.clone());
            let pairs: Vec<(String, PathBuf)> =
                to_link.iter().map(|&(_, i)| (manifest.jobs[i].input.key.clone(), files[i].clone())).collect();
            tokio::spawn(async move { store.put_files(&bucket, pairs, "application/octet-stream").await })
        });
        let reading = to_link.first().filter(|_| read_first && enqueued == 0).map(|&(_, i)| {
            let (store, bucket, key, f) =
                (store.clone(), bucket.clone(), manifest.jobs[i].input.key.clone(), files[i].clone());
            tokio::spawn(async move { store.read_ahead(&bucket, &key, &f).await })
        });
        for &(_, i) in &to_read {
            let e = &manifest.jobs[i];
            let (store, key, f, slots) = (store.clone(), e.input.key.clone(), files[i].clone(), slots.clone());
            let (bucket, routing, recipe) = (bucket.clone(), routing.clone(), recipe.clone());
            uploads.spawn(async move {
                let _slot = slots.acquire_owned().await.expect("semaphore never closed");
                let bytes = read_input(&f).await.with_context(|| format!("reading {}", f.display()))?;
                let bytes_len = bytes.len() as u64;
                let digest = keys::content_digest(&bytes);
                // Routing reads the header: a HEIF file's in a child process, waited for
                // on a blocking thread.
                let (bytes, route) = if pixq_jobs::kernel::isolation::starts_a_process(&bytes) {
                    tokio::task::spawn_blocking(move || {
                        let route = routing.route(&bytes, &recipe);
                        (bytes, route)
                    })
                    .await?
                } else {
                    let route = routing.route(&bytes, &recipe);
                    (bytes, route)
                };
                if bytes.len() <= small {
                    return anyhow::Ok((i, bytes_len, Some(digest), route, Some((key, bytes))));
                }
                store
                    .put(&bucket, &key, bytes, "application/octet-stream")
                    .await
                    .with_context(|| format!("uploading {}", f.display()))?;
                anyhow::Ok((i, bytes_len, Some(digest), route, None))
            });
        }
        let mut digests = Vec::with_capacity(chunk.len());
        let mut together = Vec::new();
        // What a failure in this chunk says about the batch.
        let queued_before = || {
            format!("batch {}: {enqueued} of its {} jobs were queued before this", manifest.batch, manifest.jobs.len())
        };
        while let Some(r) = uploads.join_next().await {
            let r = r.context("upload task failed")?.with_context(queued_before)?;
            let (i, len, digest, route, small) = r;
            together.extend(small.map(|(key, bytes)| (key, bytes, "application/octet-stream")));
            digests.push((i, len, digest, route));
            bar.inc(1);
        }
        if let Some(linking) = linking {
            linking.await.context("upload task failed")?.with_context(queued_before)?;
            digests.extend(to_link.iter().map(|&(size, i)| (i, size, None, None)));
            bar.inc(to_link.len() as u64);
        }
        if !together.is_empty() {
            store.put_all(&bucket, together).await.with_context(queued_before)?;
        }
        // Its job is sent once the bytes wait for it (a read-ahead that failed only means
        // the worker reads the file itself).
        if let Some(reading) = reading {
            let _ = reading.await;
        }
        // In the batch's order (uploads finish in any order).
        digests.sort_by_key(|d| (std::cmp::Reverse(d.1), d.0));
        let (mut light, mut heavy) = (Vec::new(), Vec::new());
        for (i, _, digest, route) in digests {
            let e = &manifest.jobs[i];
            let job = batch::new_recipe_job(&manifest.batch, i, e.input.clone(), digest, &recipe, &output);
            match route {
                Some(r) if r.route == Route::Ec2 => {
                    routed.ec2.push((i, r.reason));
                    heavy.push(job);
                }
                _ => {
                    routed.lambda += 1;
                    light.push(job);
                }
            }
        }
        for (jobs, route) in [(light, Route::Lambda), (heavy, Route::Ec2)] {
            if jobs.is_empty() {
                continue;
            }
            let queue = routing.queue(Some(route));
            batch::enqueue(queue.as_ref(), &jobs, queue.is_fifo()).await.context("enqueueing jobs")?;
            enqueued += jobs.len();
        }
        if let Some(tx) = first_queued.take() {
            let _ = tx.send(());
        }
    }
    bar.finish_and_clear();
    Ok(routed)
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

/// How `process` runs.
struct ProcessOptions {
    /// In-process worker tasks.
    workers: usize,
    /// Give up waiting after this long.
    timeout: Duration,
    /// Remove the store's copies of inputs whose jobs succeeded once their results are out.
    drop_inputs: bool,
    /// Memory budget of the in-process kernels, MB.
    memory_mb: u64,
    /// Limits and time limit of the in-process workers.
    process: ProcessConfig,
    /// Replace existing files in --out.
    overwrite: bool,
}

/// The main job: submit, run workers in-process (or follow deployed ones), fetch, summarise.
async fn process(
    b: &Backend,
    routing: &Arc<Routing>,
    paths: &[PathBuf],
    ops: &str,
    out: &Path,
    how: &ProcessOptions,
    json: bool,
) -> anyhow::Result<i32> {
    let (workers, timeout, how_overwrite) = (how.workers, how.timeout, how.overwrite);
    let started = Instant::now();
    let recipe = parse_recipe(ops)?;
    let files = inputs::collect(paths)?;
    let manifest = plan_batch(b, &files, &recipe);
    let names: HashMap<String, Vec<String>> = entry_files(&manifest).into_iter().collect();
    if !how.overwrite {
        refuse_existing(out, &names.values().flatten().cloned().collect::<Vec<_>>())?;
    }
    tokio::fs::create_dir_all(out).await.with_context(|| format!("creating {}", out.display()))?;
    let t_collect = started.elapsed();
    // The manifest (for `pixq status` and `fetch` later) is written once the first chunk is
    // queued, beside the first kernels: nothing in this run reads it, and written beside the
    // first uploads its commit held the store's write lock (and its fsyncs) in the path of
    // the first input's link.
    let (first_queued, queued) = tokio::sync::oneshot::channel();
    let manifest_written = {
        let (store, bucket, manifest) = (b.store.clone(), b.bucket.clone(), manifest.clone());
        tokio::spawn(async move {
            let _ = queued.await;
            batch::write_manifest(store.as_ref(), &bucket, &manifest).await
        })
    };
    let total = manifest.jobs.len();
    let ours: HashSet<String> = manifest.jobs.iter().map(|j| j.job_id.clone()).collect();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let shutdown = CancellationToken::new();
    // The workers start first and take each chunk of jobs as soon as it is queued.
    let worker = (workers > 0).then(|| {
        // Sends in this process wake the workers at once, and shutdown cuts a wait short, so
        // the waits are long (`PROCESS_POLL`). Many jobs held per kernel: small images are
        // bound by store commits, which group the writes of every job in flight.
        let cfg = WorkerConfig {
            concurrency: workers,
            prefetch: workers.max(64),
            events: Some(tx),
            wait: PROCESS_POLL,
            retry: pixq_jobs::settle::RetryPolicy { base: Duration::from_millis(500), ..Default::default() },
            memory_mb: how.memory_mb,
            process: ProcessConfig { allowed_buckets: vec![b.bucket.clone()], ..how.process.clone() },
            ..WorkerConfig::default()
        };
        tokio::spawn(worker::run(b.queue.clone(), b.store.clone(), cfg, shutdown.clone()))
    });
    let mut submitting = Some(tokio::spawn(upload_and_enqueue(
        b.store.clone(),
        routing.clone(),
        files.clone(),
        manifest.clone(),
        recipe.clone(),
        false,
        Some(first_queued),
        workers > 0,
    )));
    let mut t_submit = None;
    // Outputs are copied into --out as their jobs finish, while later ones compute.
    let fetch_slots = Arc::new(tokio::sync::Semaphore::new(FETCHES));
    let mut fetching = tokio::task::JoinSet::new();
    let bar = bar(total as u64, "processing");
    let (mut ok, mut failed) = (HashSet::new(), HashSet::new());
    // Jobs on their last attempt carry a provisional failure record: failed only once
    // nothing is left in the queue that could still finish them.
    let mut last_attempt: HashSet<String> = HashSet::new();
    let mut stopped = None;
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    tick.tick().await;
    while ok.len() + failed.len() < total {
        tokio::select! {
            r = async { submitting.as_mut().expect("guarded").await }, if submitting.is_some() => {
                submitting = None;
                t_submit = Some(started.elapsed());
                match r.context("submit task failed").and_then(|r| r) {
                    Ok(routed) => {
                        let said = routed.report(&manifest, routing.group()).await;
                        bar.suspend(|| eprint!("{said}"));
                    }
                    Err(e) => {
                        shutdown.cancel();
                        if let Some(w) = worker { let _ = w.await; }
                        bar.finish_and_clear();
                        return Err(e);
                    }
                }
            }
            ev = rx.recv(), if worker.is_some() => match ev {
                Some(Event::Done { job, outputs, .. }) if ours.contains(&job) => {
                    if let Some(files) = names.get(&job).filter(|_| !outputs.is_empty()) {
                        let (store, out, files, slots) = (b.store.clone(), out.to_path_buf(), files.clone(), fetch_slots.clone());
                        let job = job.clone();
                        fetching.spawn(async move {
                            let _slot = slots.acquire_owned().await.expect("semaphore never closed");
                            (job, fetch_job(store, &outputs, out, &files, how_overwrite).await)
                        });
                    }
                    ok.insert(job);
                }
                Some(Event::Failed { job: Some(job), .. }) if ours.contains(&job) => { failed.insert(job); }
                Some(_) | None => {}
            },
            // Other workers (pixq-worker processes, the Lambda) finish jobs too.
            _ = tick.tick() => {
                let st = batch::batch_status(b.store.as_ref(), &b.bucket, &manifest.batch).await?;
                for r in st.results {
                    match (r.status, r.provisional) {
                        (Status::Ok, _) => { last_attempt.remove(&r.job_id); ok.insert(r.job_id); }
                        (Status::Failed, false) => { failed.insert(r.job_id); }
                        (Status::Failed, true) => { last_attempt.insert(r.job_id); }
                    }
                }
                if !last_attempt.is_empty() {
                    let c = b.queue.counts().await?;
                    if c.visible + c.in_flight + c.delayed == 0 {
                        failed.extend(last_attempt.drain());
                    }
                }
                if started.elapsed() > timeout { stopped = Some("timed out"); break; }
            }
            _ = tokio::signal::ctrl_c() => { stopped = Some("interrupted"); break; }
        }
        bar.set_position((ok.len() + failed.len()) as u64);
        bar.set_message(if failed.is_empty() { String::new() } else { format!("({} failed)", failed.len()) });
    }
    let t_done = started.elapsed();
    shutdown.cancel();
    if let Some(w) = worker {
        let _ = w.await;
    }
    if let Some(t) = submitting.take() {
        if stopped.is_some() {
            t.abort();
        } else {
            eprint!("{}", t.await.context("submit task failed")??.report(&manifest, routing.group()).await);
        }
    }
    let t_submit = t_submit.unwrap_or(t_done);
    manifest_written.await.context("manifest task failed")?.context("writing the batch manifest")?;
    let t_stopped = started.elapsed();
    bar.finish_and_clear();
    // Outputs already placed while the batch ran.
    let mut placed = HashSet::new();
    let mut refused = Vec::new();
    let mut fetch_error = None;
    while let Some(r) = fetching.join_next().await {
        match r.context("fetch task failed").and_then(|(job, r)| r.map(|r| (job, r))) {
            Ok((job, taken)) if taken.is_empty() => {
                placed.insert(job);
            }
            Ok((_, taken)) => refused.extend(taken),
            Err(e) => fetch_error = fetch_error.or(Some(e)),
        }
    }
    let t_placed = started.elapsed();
    let kept = || {
        format!(
            "batch {} is processed and kept in {}; collect it with `pixq fetch {} --out <dir>`",
            manifest.batch, b.location, manifest.batch
        )
    };
    if let (Some(e), None) = (fetch_error, stopped) {
        return Err(e).with_context(kept);
    }
    if let Some(why) = stopped {
        eprintln!(
            "pixq: {why} with {} of {total} jobs finished; the rest stay queued in {}.\n      Finish them with `{}` and collect with `pixq fetch {} --out {}`.",
            ok.len() + failed.len(),
            b.location,
            b.worker_hint,
            manifest.batch,
            out.display()
        );
        return Ok(if why == "interrupted" { EXIT_INTERRUPTED } else { EXIT_TIMED_OUT });
    }
    let st = batch::batch_status(b.store.as_ref(), &b.bucket, &manifest.batch).await?;
    let t_status = started.elapsed();
    let written =
        placed.len() + fetch(b, &manifest, &st, out, how.overwrite, &placed, refused).await.with_context(kept)?;
    let t_fetched = started.elapsed();
    if how.drop_inputs {
        // The outputs are out; the copies of their inputs would only double the disk used.
        // A job that failed keeps its input, for `pixq dlq redrive`.
        // The keys this run uploaded (the manifest's), not what a record names.
        let ok: HashSet<&str> =
            st.results.iter().filter(|r| r.status == Status::Ok).map(|r| r.job_id.as_str()).collect();
        let keys: Vec<String> = manifest
            .jobs
            .iter()
            .filter(|e| ok.contains(e.job_id.as_str()) && e.input.bucket == b.bucket)
            .map(|e| e.input.key.clone())
            .collect();
        if let Err(e) = b.store.delete_many(&b.bucket, &keys).await {
            tracing::warn!(error = %e, "could not remove the uploaded inputs");
        }
    }
    let secs = started.elapsed().as_secs_f64();
    // When each stage ended, in seconds from the start (uploads overlap the processing, and
    // outputs are copied as their jobs finish).
    let timeline = serde_json::json!({
        "planned": t_collect.as_secs_f64(),
        "submitted": t_submit.as_secs_f64(),
        "processed": t_done.as_secs_f64(),
        "workers_stopped": t_stopped.as_secs_f64(),
        "outputs_placed": t_placed.as_secs_f64(),
        "records_read": t_status.as_secs_f64(),
        "fetched": t_fetched.as_secs_f64(),
        "inputs_removed": secs,
    });
    if json {
        let sources = sources_by_job(&manifest);
        let failures: Vec<serde_json::Value> = st
            .results
            .iter()
            .filter(|r| r.status == Status::Failed)
            .map(|r| serde_json::json!({"source": sources.get(r.job_id.as_str()), "reason": r.reason}))
            .collect();
        let v = serde_json::json!({
            "batch": manifest.batch, "images": total, "seconds": secs, "ok": st.ok(), "reused": st.reused(),
            "failed": st.failed(), "written": written, "files_per_image": recipe.pipelines().len(),
            "out": out.display().to_string(), "failures": failures,
            "timeline": timeline,
        });
        println!("{v}");
        return Ok(if st.failed() > 0 { 1 } else { 0 });
    }
    let per_image = recipe.pipelines().len();
    let written = if per_image > 1 { format!("{written} x {per_image} variants") } else { written.to_string() };
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

/// Exit code when `process` gave up waiting (`--timeout-secs`): the jobs stay queued.
pub const EXIT_TIMED_OUT: i32 = 124;
/// Exit code after Ctrl-C.
pub const EXIT_INTERRUPTED: i32 = 130;

fn sources_by_job(manifest: &BatchManifest) -> HashMap<&str, &str> {
    manifest.jobs.iter().map(|j| (j.job_id.as_str(), j.source.as_str())).collect()
}

fn print_failures(manifest: &BatchManifest, st: &BatchStatus) {
    let sources = sources_by_job(manifest);
    for r in st.results.iter().filter(|r| r.status == Status::Failed) {
        let src = sources.get(r.job_id.as_str()).copied().unwrap_or(r.input.key.as_str());
        println!(
            "  failed: {}: {}",
            inputs::shown(src),
            inputs::shown(r.reason.as_deref().unwrap_or("no reason recorded"))
        );
    }
}

/// Downloads every ok output of a batch into `out` under the names assigned at submit,
/// except the jobs in `skip` (placed already); `refused` are names found taken meanwhile.
/// Each file is whole or absent: it is written to a temporary file created exclusively
/// (a fresh random name, never through a symlink), then moved into place; without
/// `overwrite` the move refuses an existing file (a hard link cannot replace one).
async fn fetch(
    b: &Backend,
    manifest: &BatchManifest,
    st: &BatchStatus,
    out: &Path,
    overwrite: bool,
    skip: &HashSet<String>,
    mut refused: Vec<String>,
) -> anyhow::Result<usize> {
    tokio::fs::create_dir_all(out).await.with_context(|| format!("creating {}", out.display()))?;
    let by_job: HashMap<&str, _> = st.results.iter().map(|r| (r.job_id.as_str(), r)).collect();
    let mut written = 0;
    let slots = Arc::new(tokio::sync::Semaphore::new(FETCHES));
    let mut tasks = tokio::task::JoinSet::new();
    for (job, files) in entry_files(manifest) {
        if skip.contains(&job) {
            continue;
        }
        let Some(r) = by_job.get(job.as_str()).filter(|r| r.status == Status::Ok && !r.outputs.is_empty()) else {
            continue;
        };
        // An output is read from this batch's bucket only, whatever a record names.
        if let Some(o) = r.outputs.iter().find(|o| o.object.bucket != b.bucket) {
            bail!("the record of job {job} names an output in bucket {:?}, not {}", o.object.bucket, b.bucket);
        }
        let (store, outputs, out, slots) = (b.store.clone(), r.outputs.clone(), out.to_path_buf(), slots.clone());
        tasks.spawn(async move {
            let _slot = slots.acquire_owned().await.expect("semaphore never closed");
            fetch_job(store, &outputs, out, &files, overwrite).await
        });
    }
    while let Some(r) = tasks.join_next().await {
        let taken = r.context("fetch task failed")??;
        if taken.is_empty() {
            written += 1;
        }
        refused.extend(taken);
    }
    refused.sort();
    if let Some(first) = refused.first() {
        bail!(
            "{} output file{} appeared in {} while pixq ran (first: {first}) and {} not replaced; pass --overwrite to replace them",
            refused.len(),
            if refused.len() == 1 { "" } else { "s" },
            out.display(),
            if refused.len() == 1 { "was" } else { "were" }
        );
    }
    Ok(written)
}

/// Copies a job's outputs into `out` as `files` (records list a job's outputs in the order
/// of its variants, as the manifest lists their files); returns the names that were taken.
async fn fetch_job(
    store: Arc<dyn ObjectStore>,
    outputs: &[OutputInfo],
    out: PathBuf,
    files: &[String],
    overwrite: bool,
) -> anyhow::Result<Vec<String>> {
    let mut taken = Vec::new();
    for (o, name) in outputs.iter().zip(files) {
        if let Some(name) = fetch_one(store.clone(), o.object.clone(), out.clone(), name.clone(), overwrite).await? {
            taken.push(name);
        }
    }
    Ok(taken)
}

/// Copies one output into `out` as `name`: `Ok(None)` when placed, `Ok(Some(name))` when the
/// name was taken (and `overwrite` is off).
async fn fetch_one(
    store: Arc<dyn ObjectStore>,
    object: ObjectRef,
    out: PathBuf,
    name: String,
    overwrite: bool,
) -> anyhow::Result<Option<String>> {
    let bytes = store.get(&object.bucket, &object.key).await.with_context(|| format!("downloading {}", object.key))?;
    let path = out.join(&name);
    let name2 = name.clone();
    let (placed, bytes) = tokio::task::spawn_blocking(move || (place(&out, &name2, &bytes, overwrite), bytes))
        .await
        .context("writing task failed")?;
    match placed {
        Ok(()) => Ok(None),
        // The same bytes under that name already (an earlier, interrupted run placed it):
        // nothing to replace, nothing to refuse.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && same_file_bytes(&path, &bytes) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(Some(name)),
        Err(e) => Err(e).with_context(|| format!("writing {}", path.display())),
    }
}

/// Whether the regular file at `path` (not a link) holds exactly `bytes`.
fn same_file_bytes(path: &Path, bytes: &[u8]) -> bool {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_file() && m.len() == bytes.len() as u64 => std::fs::read(path).is_ok_and(|b| b == bytes),
        _ => false,
    }
}

/// Inputs over this size are linked into a store on this disk, not read.
const LINK_ABOVE: usize = pixq_jobs::store::fs::LINK_ABOVE;

/// Files up to this size are read on the async thread that needs them: a few system calls
/// cost less than handing them to a blocking thread and back. (Creating files is left to
/// blocking threads: a create waits on the folder's lock.)
const SMALL_FILE: usize = 256 << 10;

/// The largest input a worker takes; a file over it is read up to one byte more, so its
/// job fails for its size without the file being read whole (a sparse terabyte).
const MAX_INPUT: u64 = pixq_jobs::kernel::Limits::DEFAULT_MAX_INPUT_BYTES;

/// Reads an input file (a small one in place), at most [`MAX_INPUT`] + 1 bytes.
async fn read_input(path: &Path) -> std::io::Result<Vec<u8>> {
    match std::fs::metadata(path) {
        Ok(m) if m.len() <= SMALL_FILE as u64 => inputs::read_regular(path, MAX_INPUT + 1),
        _ => {
            let path = path.to_path_buf();
            tokio::task::spawn_blocking(move || inputs::read_regular(&path, MAX_INPUT + 1)).await?
        }
    }
}

/// Outputs copied into --out at once: a few overlap the store reads with the writes, more
/// only queue up on the folder's lock (every create in one folder takes it).
const FETCHES: usize = 16;

/// Writes `bytes` to `dir/name`, whole or not at all.
fn place(dir: &Path, name: &str, bytes: &[u8], overwrite: bool) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    if !overwrite {
        match place_unnamed(dir, name, bytes) {
            // No O_TMPFILE on this filesystem (or no /proc): the portable way.
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists && e.kind() != std::io::ErrorKind::StorageFull => {}
            r => return r,
        }
    }
    place_named(dir, name, bytes, overwrite)
}

/// Linux: an unnamed file in `dir` (`O_TMPFILE`) gets its name only once it is whole
/// (`linkat`, which never replaces an existing name): one folder entry made per output
/// instead of a temporary name made, linked and removed.
#[cfg(target_os = "linux")]
fn place_unnamed(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    use rustix::fs::{AtFlags, CWD, Mode, OFlags};
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let fd = rustix::fs::open(dir, OFlags::WRONLY | OFlags::TMPFILE | OFlags::CLOEXEC, Mode::from_raw_mode(0o644))?;
    let mut f = std::fs::File::from(fd);
    f.write_all(bytes)?;
    let from = format!("/proc/self/fd/{}", f.as_raw_fd());
    rustix::fs::linkat(CWD, from.as_str(), CWD, dir.join(name), AtFlags::SYMLINK_FOLLOW)?;
    Ok(())
}

/// Anywhere: a temporary name created exclusively, then linked (or, to overwrite, renamed)
/// into place.
fn place_named(dir: &Path, name: &str, bytes: &[u8], overwrite: bool) -> std::io::Result<()> {
    use std::io::Write;
    let path = dir.join(name);
    // Not named after the output: with a variant's name a long one would pass 255 bytes.
    let tmp = dir.join(format!(".pixq-{}.partial", ids::random_hex(2)));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(bytes)?;
        if overwrite { std::fs::rename(&tmp, &path) } else { std::fs::hard_link(&tmp, &path) }
    })();
    let _ = std::fs::remove_file(&tmp);
    result
}

/// A batch's manifest, as `status` and `fetch` read it from the store. The names it gives
/// outputs must be plain file names: whoever can write the store (a shared home, a bucket)
/// must not choose where in the user's files `fetch` writes.
async fn manifest(b: &Backend, batch: &str) -> anyhow::Result<BatchManifest> {
    let m = batch::read_manifest(b.store.as_ref(), &b.bucket, batch)
        .await?
        .ok_or_else(|| anyhow!("unknown batch {batch} (no manifest in {})", b.location))?;
    for e in &m.jobs {
        for name in e.output_name.iter().chain(&e.variant_files) {
            if !inputs::is_plain_name(name) {
                bail!(
                    "the manifest of batch {batch} names an output {:?}, not a plain file name: refusing to write it",
                    name.escape_debug().to_string()
                );
            }
        }
    }
    Ok(m)
}

async fn status(b: &Backend, batch: &str, json: bool) -> anyhow::Result<i32> {
    let m = manifest(b, batch).await?;
    let st = batch::batch_status(b.store.as_ref(), &b.bucket, batch).await?;
    let pending = m.jobs.len().saturating_sub(st.results.len());
    let by_job: HashMap<&str, &pixq_jobs::schema::JobResult> =
        st.results.iter().map(|r| (r.job_id.as_str(), r)).collect();
    let state_of = |job: &str| match by_job.get(job) {
        Some(r) if r.status == Status::Ok => "ok",
        Some(r) if r.provisional => "last attempt",
        Some(_) => "failed",
        None => "pending",
    };
    let c = b.queue.counts().await?;
    if json {
        let files: Vec<serde_json::Value> = entry_files(&m)
            .iter()
            .zip(&m.jobs)
            .map(|((job, files), e)| {
                let r = by_job.get(job.as_str());
                serde_json::json!({
                    "job": job, "source": e.source, "output": files[0], "outputs": files, "state": state_of(job),
                    "reason": r.and_then(|r| r.reason.clone()),
                    "ran_on": r.and_then(|r| r.runtime.clone()),
                    "forwarded": r.and_then(|r| r.forwarded.clone()),
                    "width": r.and_then(|r| r.outputs.first()).and_then(|o| o.width),
                    "height": r.and_then(|r| r.outputs.first()).and_then(|o| o.height),
                })
            })
            .collect();
        let v = serde_json::json!({
            "batch": batch, "pipeline": m.pipeline, "jobs": m.jobs.len(), "ok": st.ok(), "reused": st.reused(),
            "failed": st.failed(), "pending": pending, "files": files,
            "queue": {"visible": c.visible, "in_flight": c.in_flight, "delayed": c.delayed, "dead": c.dead},
        });
        println!("{v}");
        return Ok(0);
    }
    println!(
        "batch {batch}: {} jobs, {} ok ({} reused), {} failed, {pending} pending  [{}]",
        m.jobs.len(),
        st.ok(),
        st.reused(),
        st.failed(),
        m.pipeline
    );
    for ((job, files), e) in entry_files(&m).iter().zip(&m.jobs) {
        let name = files.join(", ");
        let r = by_job.get(job.as_str());
        let ran_on = r.and_then(|r| r.runtime.as_deref()).map(|w| format!("  (on {w})")).unwrap_or_default();
        println!("  {:<12} {} -> {}{ran_on}", state_of(job), inputs::shown(&e.source), inputs::shown(&name));
        if let Some(why) = r.and_then(|r| r.forwarded.as_deref()) {
            println!("               forwarded by the Lambda function to the heavy queue: {why}");
        }
    }
    print_failures(&m, &st);
    println!(
        "queue: {} visible, {} in flight, {} delayed, {} dead-lettered",
        c.visible, c.in_flight, c.delayed, c.dead
    );
    Ok(0)
}

/// `pixq watermark add|list`.
async fn watermark(b: &Backend, action: WatermarkAction, json: bool) -> anyhow::Result<i32> {
    use pixq_jobs::kernel::op::{WATERMARK_MAX_BYTES, WATERMARK_MAX_PIXELS, check_watermark_name};
    match action {
        WatermarkAction::Add { name, file } => {
            check_watermark_name(&name).map_err(|e| anyhow!("{e}"))?;
            let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            // Refused here what every job would refuse: too big, not an image, too many pixels.
            let limits = pixq_jobs::kernel::Limits::default()
                .max_input_bytes(WATERMARK_MAX_BYTES)
                .max_pixels(WATERMARK_MAX_PIXELS);
            let probe = pixq_jobs::kernel::codec::probe(&bytes, &limits)
                .map_err(|e| anyhow!("{} cannot be a watermark: {e}", file.display()))?;
            let key = format!("watermarks/{name}");
            b.store.put(&b.bucket, &key, bytes, probe.format.mime()).await.with_context(|| format!("storing {key}"))?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"name": name, "key": key, "width": probe.width, "height": probe.height})
                );
            } else {
                println!("watermark {name}: {}x{} {} at {}/{key}", probe.width, probe.height, probe.format, b.bucket);
            }
            Ok(0)
        }
        WatermarkAction::List => {
            let marks = b.store.list(&b.bucket, "watermarks/").await?;
            for m in &marks {
                let name = m.key.trim_start_matches("watermarks/");
                if json {
                    println!("{}", serde_json::json!({"name": name, "bytes": m.size}));
                } else {
                    println!("{name}  {} bytes", m.size);
                }
            }
            Ok(0)
        }
    }
}

async fn dlq(queue: &dyn Queue, action: DlqAction, json: bool) -> anyhow::Result<i32> {
    match action {
        DlqAction::List { max } => {
            let dead = queue.dead_letters(max).await?;
            if json {
                let v: Vec<serde_json::Value> = dead
                    .iter()
                    .map(|d| {
                        let job = Job::from_json(&d.body).ok();
                        serde_json::json!({
                            "message": d.id, "job": job.as_ref().map(|j| &j.id),
                            "input": job.as_ref().map(|j| &j.input.key), "reason": d.reason,
                            "receive_count": d.receive_count,
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(v));
                return Ok(0);
            }
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
