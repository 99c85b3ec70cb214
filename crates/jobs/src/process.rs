//! The one `process` step every runtime shares: read the input (limits checked from its
//! metadata before download), check it is the input the message names, plan it, admit it
//! under the memory budget, run the kernel on a blocking thread under a time limit, write the
//! output and the result record, and say whether the message may be deleted, must be
//! retried, or is poison.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use pixq_kernel::{Limits, Processor, Stop};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::keys;
use crate::prom::Metrics;
use crate::route::{FunctionFit, Route};
use crate::schema::{Job, JobResult, ObjectRef, OutputInfo, SCHEMA_VERSION, StageTimings, Status};
use crate::store::{ObjectStore, StoreError};

/// Settings of the process step.
#[derive(Debug, Clone)]
pub struct ProcessConfig {
    /// Kernel limits (also checked against the input's size before download).
    pub limits: Limits,
    /// Name written into result records (host, pid, runtime).
    pub worker_id: String,
    /// Runtime name for metrics (`lambda`, `ec2`, `local`).
    pub runtime: String,
    /// Print one CloudWatch Embedded Metric Format line per job to stdout.
    pub emf: bool,
    /// Longest a job's kernel may run; past it the job fails permanently (a job that takes
    /// this long once takes it every time). On Lambda the invocation's deadline also applies.
    pub job_timeout: Duration,
    /// Buckets a job may read from or write to (empty: any the credentials allow). A queued
    /// message is not trusted to name them: a forged one must not turn the worker's role
    /// into a copier between buckets.
    pub allowed_buckets: Vec<String>,
    /// The Lambda function's limits when it forwards jobs that would not fit them to the
    /// heavy queue (planned from the header, before any decode); `None` runs everything.
    pub forward: Option<FunctionFit>,
}

impl ProcessConfig {
    /// Whether jobs may use `bucket`.
    pub fn allows(&self, bucket: &str) -> bool {
        self.allowed_buckets.is_empty() || self.allowed_buckets.iter().any(|a| a == bucket)
    }
}

/// Default per-job time limit: ten minutes, far beyond any sane single-image pipeline on
/// the largest accepted image, far below "holds a lane for an hour".
pub const DEFAULT_JOB_TIMEOUT: Duration = Duration::from_secs(600);

impl Default for ProcessConfig {
    fn default() -> Self {
        ProcessConfig {
            limits: Limits::default(),
            worker_id: format!("local-{}", std::process::id()),
            runtime: "local".into(),
            emf: false,
            job_timeout: DEFAULT_JOB_TIMEOUT,
            allowed_buckets: Vec::new(),
            forward: None,
        }
    }
}

/// A memory budget for kernels derived from this machine: three quarters of the memory the
/// process may use (the cgroup limit when there is one, else the physical memory), leaving
/// the rest to inputs in hand, the runtime and the system. 1024 MB when neither is readable.
pub fn default_memory_mb() -> u64 {
    let physical = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        let line = s.lines().find(|l| l.starts_with("MemTotal:"))?;
        line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kb| kb / 1024)
    });
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(|b| b >> 20);
    let total = match (physical, cgroup) {
        (Some(p), Some(c)) => p.min(c),
        (p, c) => p.or(c).unwrap_or(1365),
    };
    (total * 3 / 4).max(64)
}

/// The budget for a Lambda function of `function_mb` (AWS_LAMBDA_FUNCTION_MEMORY_SIZE):
/// what is left after the runtime, the binary and the records in hand (about 96 MB), at
/// least 64 MB.
pub fn lambda_memory_mb(function_mb: u64) -> u64 {
    function_mb.saturating_sub(96).max(64)
}

/// What the caller does with the message.
#[derive(Debug)]
pub enum Outcome {
    /// Finished (output written or reused, result recorded): delete the message.
    Done(Box<JobResult>),
    /// Failed in a way that may pass: release it for a later attempt.
    Retry(String),
    /// Will never succeed: dead-letter it. The failed result record is written already
    /// (unless writing it failed, in which case the outcome is `Retry`).
    Poison(String),
    /// Not started because the worker is shutting down: release it at once.
    Released,
    /// Would not fit this runtime: send it to the heavy queue (why).
    Forward(String),
}

/// Admission to the kernel: a number of lanes (jobs computing at once, one per core by
/// default) and a memory budget in MB shared by all kernels, charged with each job's
/// estimated peak ([`pixq_kernel::Plan`]), so several workers cannot together allocate more
/// than the machine has. A job holds its admission only while the kernel runs: downloading
/// the input and writing the output happen outside, overlapping other jobs' kernels.
///
/// Reads of large inputs from a store on this machine's disk can be gated too
/// ([`Admission::reading_at_most`]): such a read is CPU (copying, hashing, faulting in the
/// buffer), not waiting, so reading every prefetched photo at once only takes the cores
/// from the kernels, the first jobs' inputs arrive last, and every input read sits in
/// memory until its kernel runs.
#[derive(Debug, Clone)]
pub struct Admission {
    memory: Arc<Semaphore>,
    lanes: Arc<Lanes>,
    /// Large local reads at once, and large inputs read and not yet through their kernel
    /// (`None`: no limits).
    reads: Option<(Arc<Semaphore>, Arc<Semaphore>)>,
    budget_mb: u32,
    metrics: Option<Arc<Metrics>>,
}

/// Kernel lanes, handed to the waiting job with the most work first (its plan's estimated
/// kernel time): jobs become ready in the order their downloads finish, and a small input
/// is read long before a large one, so first come first served would run the large jobs
/// last, one lane busy at the end while the others idle. Longest first lets the lanes end
/// together. A job that has waited a second goes next whatever its size, so a stream of
/// large jobs never starves a small one.
#[derive(Debug)]
struct Lanes {
    total: usize,
    state: std::sync::Mutex<LaneState>,
}

#[derive(Debug)]
struct LaneState {
    free: usize,
    waiting: Vec<LaneWaiter>,
}

#[derive(Debug)]
struct LaneWaiter {
    work: u64,
    /// Tokio's clock: tests run it paused and move it.
    since: tokio::time::Instant,
    tx: tokio::sync::oneshot::Sender<()>,
}

/// How long a job waits before it goes next whatever its size.
const LANE_WAIT_LIMIT: Duration = Duration::from_secs(1);

impl Lanes {
    fn new(total: usize) -> Lanes {
        Lanes { total, state: std::sync::Mutex::new(LaneState { free: total, waiting: Vec::new() }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LaneState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A lane for a job with `work` (estimated kernel ns); waits its turn when none is free.
    async fn acquire(self: &Arc<Self>, work: u64) -> Lane {
        let rx = {
            let mut st = self.lock();
            if st.free > 0 {
                st.free -= 1;
                return Lane(self.clone());
            }
            let (tx, rx) = tokio::sync::oneshot::channel();
            st.waiting.push(LaneWaiter { work, since: tokio::time::Instant::now(), tx });
            rx
        };
        let mut waiting = LaneWait { rx, lanes: self.clone(), got: false };
        // The sender lives in `waiting` until a lane is handed over: it always sends.
        let _ = (&mut waiting.rx).await;
        waiting.got = true;
        Lane(self.clone())
    }

    /// A lane given back: to the waiter whose turn it is, else free.
    fn release(&self) {
        let mut st = self.lock();
        while !st.waiting.is_empty() {
            let oldest = (0..st.waiting.len()).min_by_key(|&i| st.waiting[i].since).expect("not empty");
            let next = if st.waiting[oldest].since.elapsed() >= LANE_WAIT_LIMIT {
                oldest
            } else {
                (0..st.waiting.len())
                    .max_by_key(|&i| (st.waiting[i].work, std::cmp::Reverse(st.waiting[i].since)))
                    .expect("not empty")
            };
            // A waiter that gave up (its job was dropped) refuses it; the next one takes it.
            if st.waiting.swap_remove(next).tx.send(()).is_ok() {
                return;
            }
        }
        st.free += 1;
    }
}

/// A job waiting for a lane; dropped before its turn, it leaves the queue, and a lane handed
/// over meanwhile is passed on.
struct LaneWait {
    rx: tokio::sync::oneshot::Receiver<()>,
    lanes: Arc<Lanes>,
    got: bool,
}

impl Drop for LaneWait {
    fn drop(&mut self) {
        if !self.got {
            self.rx.close();
            if self.rx.try_recv().is_ok() {
                self.lanes.release();
            }
        }
    }
}

/// One kernel lane held; dropping it hands the lane on.
#[derive(Debug)]
struct Lane(Arc<Lanes>);

impl Drop for Lane {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// A job's turn to read its input ([`Admission::read_turn`]): the read ends with
/// [`ReadTurn::read`], the hold on an input in memory when the turn is dropped (after the
/// kernel).
#[derive(Debug, Default)]
pub struct ReadTurn {
    reading: Option<OwnedSemaphorePermit>,
    _held: Option<OwnedSemaphorePermit>,
}

impl ReadTurn {
    /// The input is read (and hashed): the next job may read.
    pub fn read(&mut self) {
        self.reading = None;
    }
}

/// Held while one job runs the kernel; dropping it admits the next.
#[derive(Debug)]
pub struct Admitted {
    _lane: Lane,
    _memory: OwnedSemaphorePermit,
    /// The metrics it counts in, and the bytes it was charged.
    counted: Option<(Arc<Metrics>, u64)>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some((m, bytes)) = &self.counted {
            m.lanes_busy.fetch_sub(1, Ordering::Relaxed);
            m.memory_admitted_bytes.fetch_sub(*bytes, Ordering::Relaxed);
        }
    }
}

impl Admission {
    /// A budget of `memory_mb` (at least 1), with no limit on lanes beyond it.
    pub fn new(memory_mb: u64) -> Admission {
        Admission::with_lanes(memory_mb, Semaphore::MAX_PERMITS)
    }

    /// A budget of `memory_mb` and at most `lanes` kernels at once (each at least 1).
    pub fn with_lanes(memory_mb: u64, lanes: usize) -> Admission {
        let budget_mb = memory_mb.clamp(1, u64::from(u32::MAX >> 3)) as u32;
        Admission {
            memory: Arc::new(Semaphore::new(budget_mb as usize)),
            lanes: Arc::new(Lanes::new(lanes.clamp(1, Semaphore::MAX_PERMITS))),
            reads: None,
            budget_mb,
            metrics: None,
        }
    }

    /// At most `n` (at least 1) inputs over [`INLINE_BYTES`] read and hashed at once, and
    /// at most `2 n` held between their read and the end of their kernel (one running and
    /// one ready per lane), in the order the jobs ask (tokio's semaphores are fair): for a
    /// store whose reads are CPU work on this machine ([`ObjectStore::links_files`]). An
    /// input is then read shortly before its kernel, into the buffer of one that just
    /// finished (`buffers`). A read from S3 is mostly waiting and stays ungated.
    pub fn reading_at_most(mut self, n: usize) -> Admission {
        let n = n.clamp(1, Semaphore::MAX_PERMITS / 2);
        self.reads = Some((Arc::new(Semaphore::new(n)), Arc::new(Semaphore::new(2 * n))));
        self
    }

    /// Waits for a turn to read an input of `size` bytes (at once for a small one, or with
    /// no gate). `None` when `cancel` fires first.
    pub async fn read_turn(&self, size: u64, cancel: &CancellationToken) -> Option<ReadTurn> {
        let Some((reads, held)) = self.reads.as_ref().filter(|_| size > INLINE_BYTES as u64) else {
            return Some(ReadTurn::default());
        };
        let both = async {
            let held = held.clone().acquire_owned().await.ok()?;
            let reading = reads.clone().acquire_owned().await.ok()?;
            Some(ReadTurn { reading: Some(reading), _held: Some(held) })
        };
        tokio::select! {
            biased;
            t = both => t,
            _ = cancel.cancelled() => None,
        }
    }

    /// Counts lanes busy, memory admitted and admission waits in `m`.
    pub fn observed(mut self, m: Arc<Metrics>) -> Admission {
        m.lanes.store(self.lanes.total as u64, Ordering::Relaxed);
        m.memory_budget_bytes.store(self.budget_bytes(), Ordering::Relaxed);
        self.metrics = Some(m);
        self
    }

    /// The whole budget in bytes: a job whose estimate is over it can never run here.
    pub fn budget_bytes(&self) -> u64 {
        u64::from(self.budget_mb) << 20
    }

    /// Waits until a lane is free for this job (the waiting job with the most `work`, its
    /// estimated kernel ns, goes first; see `Lanes`) and `bytes` fit in the budget. `None`
    /// when `cancel` fires first. A job over the whole budget must be refused by the caller
    /// ([`pixq_kernel::Plan::check_budget`]); here it would wait for all of it.
    pub async fn admit(&self, bytes: u64, work: u64, cancel: &CancellationToken) -> Option<Admitted> {
        let mb = (bytes.div_ceil(1 << 20)).clamp(1, u64::from(self.budget_mb)) as u32;
        let asked = Instant::now();
        let both = async {
            let lane = self.lanes.acquire(work).await;
            let memory = self.memory.clone().acquire_many_owned(mb).await.ok()?;
            Some(Admitted { _lane: lane, _memory: memory, counted: None })
        };
        // Biased: a job that fits right away counts as started and runs to the end; only a
        // job still waiting for room is released at shutdown.
        let mut admitted = tokio::select! {
            biased;
            p = both => p,
            _ = cancel.cancelled() => None,
        }?;
        if let Some(m) = &self.metrics {
            m.admission_wait.observe(asked.elapsed());
            m.lanes_busy.fetch_add(1, Ordering::Relaxed);
            m.memory_admitted_bytes.fetch_add(bytes, Ordering::Relaxed);
            admitted.counted = Some((m.clone(), bytes));
        }
        Some(admitted)
    }
}

thread_local! {
    /// One kernel processor per blocking thread: scratch buffers and codec handles are reused.
    static PROCESSOR: RefCell<Option<Processor>> = const { RefCell::new(None) };
}

/// Inputs up to this size are hashed on the async thread that holds them.
const INLINE_BYTES: usize = 256 << 10;

/// Jobs whose images are never larger than this (256 x 256 pixels, at every step of the
/// plan) run their kernel on the async thread.
const INLINE_PIXELS: u64 = 256 * 256;

fn run_kernel(
    limits: Limits,
    input: &[u8],
    probe: &pixq_kernel::Probe,
    pipelines: &[pixq_kernel::Pipeline],
    overlays: pixq_kernel::Overlays,
    stop: &Stop,
) -> Result<Vec<pixq_kernel::Output>, pixq_kernel::Error> {
    PROCESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().map(|p| *p.limits() != limits).unwrap_or(true) {
            *slot = Some(Processor::new(limits));
        }
        let p = slot.as_mut().expect("just set");
        let pipelines: Vec<&pixq_kernel::Pipeline> = pipelines.iter().collect();
        let marked = !overlays.is_empty();
        if marked {
            p.set_overlays(overlays);
        }
        let out = p.process_probed(input, probe, &pipelines, stop);
        if marked {
            p.set_overlays(pixq_kernel::Overlays::new());
        }
        out
    })
}

/// The marks the job's `watermark` steps name, from `watermarks/NAME` in its output bucket.
async fn fetch_overlays(store: &dyn ObjectStore, job: &Job) -> Result<pixq_kernel::Overlays, JobError> {
    use pixq_kernel::op::WATERMARK_MAX_BYTES;
    let mut out = pixq_kernel::Overlays::new();
    let bucket = &job.output.bucket;
    for p in job.pipelines() {
        for op in &p.ops {
            let pixq_kernel::Op::Watermark(w) = op else { continue };
            if out.contains_key(&w.name) {
                continue;
            }
            let key = format!("watermarks/{}", w.name);
            let missing = || {
                JobError::Permanent(format!(
                    "watermark '{}' not found: put its image at {bucket}/{key} (`pixq watermark add {} FILE`)",
                    w.name, w.name
                ))
            };
            let meta = store.head(bucket, &key).await.at("reading a watermark's metadata")?.ok_or_else(missing)?;
            let too_big = |n: u64| {
                JobError::Permanent(format!(
                    "watermark '{}' is {n} bytes, over the limit of {WATERMARK_MAX_BYTES} bytes",
                    w.name
                ))
            };
            if meta.size > WATERMARK_MAX_BYTES {
                return Err(too_big(meta.size));
            }
            let bytes = match store.get(bucket, &key).await {
                Ok(b) => b,
                Err(StoreError::NotFound { .. }) => return Err(missing()),
                Err(e) => return Err(JobError::store("downloading a watermark", e)),
            };
            if bytes.len() as u64 > WATERMARK_MAX_BYTES {
                return Err(too_big(bytes.len() as u64));
            }
            out.insert(w.name.clone(), bytes);
        }
    }
    Ok(out)
}

/// Cancels the kernel's [`Stop`] when dropped: if the future running a job is dropped (the
/// worker's grace period is over, the Lambda's time is up), the kernel on its blocking
/// thread stops within milliseconds instead of running on unobserved.
struct CancelOnDrop(Stop);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// Checks the downloaded bytes against the digest the message names. A forged or stale
/// digest would otherwise name an output key for other pixels than these.
fn verify_digest(claimed: &str, etag: Option<&str>, bytes: &[u8]) -> Result<(), String> {
    let hashed = if claimed.starts_with("blake3:") {
        Some(keys::content_digest(bytes))
    } else {
        claimed.starts_with("sha256:").then(|| format!("sha256:{}", keys::sha256_hex(bytes)))
    };
    if let Some(actual) = hashed {
        if actual != claimed {
            return Err(format!("input digest mismatch: the message says {claimed}, the object hashes to {actual}"));
        }
        return Ok(());
    }
    if let Some(tag) = claimed.strip_prefix("etag:") {
        return match etag {
            Some(e) if e == tag => Ok(()),
            Some(e) => Err(format!("input changed: the message names ETag {tag}, the object has {e}")),
            None => Err("the message names an ETag but the store gives none".into()),
        };
    }
    Err(format!("unknown input digest '{claimed}' (expected blake3:<hex>, sha256:<hex> or etag:<etag>)"))
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

fn base_result(job: &Job, cfg: &ProcessConfig, attempt: u32, status: Status) -> JobResult {
    JobResult {
        schema: SCHEMA_VERSION,
        job_id: job.id.clone(),
        batch: job.batch.clone(),
        status,
        reason: None,
        input: job.input.clone(),
        input_bytes: None,
        source_size: None,
        outputs: Vec::new(),
        reused: false,
        pipeline: job.canonical(),
        kernel_version: pixq_kernel::KERNEL_VERSION.to_string(),
        timings: StageTimings { queue_wait_ms: (now_ms() - job.submitted_at_ms).max(0) as f64, ..Default::default() },
        attempts: attempt,
        worker: cfg.worker_id.clone(),
        finished_at_ms: 0,
        provisional: false,
        runtime: Some(cfg.runtime.clone()),
        forwarded: job.forwarded.clone(),
    }
}

async fn write_result(store: &dyn ObjectStore, job: &Job, r: JobResult) -> Result<JobResult, StoreError> {
    write_result_after(store, job, r, Vec::new()).await
}

/// Writes the record after `outputs` not yet written (small ones, which a store may commit
/// together with it: one transaction and one fsync instead of two).
async fn write_result_after(
    store: &dyn ObjectStore,
    job: &Job,
    mut r: JobResult,
    outputs: Vec<Pending>,
) -> Result<JobResult, StoreError> {
    r.finished_at_ms = now_ms();
    let body = serde_json::to_vec_pretty(&r).expect("a result always serialises");
    let t = Instant::now();
    let mut objects = outputs;
    objects.push((keys::result_key(&job.batch, &job.id), body, "application/json"));
    store.put_all(&job.output.bucket, objects).await?;
    r.timings.upload_ms += ms_since(t);
    Ok(r)
}

/// An output object not yet written: key, bytes, content type.
type Pending = (String, Vec<u8>, &'static str);

/// Records a permanent failure and returns `Poison` (or `Retry` when the record cannot be
/// written now). Also used by the worker when retries run out.
pub async fn record_failure(
    store: &dyn ObjectStore,
    job: &Job,
    cfg: &ProcessConfig,
    attempt: u32,
    reason: String,
) -> Outcome {
    let mut r = base_result(job, cfg, attempt, Status::Failed);
    r.reason = Some(reason.clone());
    match write_result(store, job, r).await {
        Ok(_) => Outcome::Poison(reason),
        Err(e) => Outcome::Retry(format!("{reason} (and the failure record could not be written: {e})")),
    }
}

/// Writes a failed record marked provisional: the job is on its last allowed attempt, and
/// the record stands if that attempt never finishes (the queue then dead-letters the message
/// without any code of ours running). A finished attempt overwrites it.
pub async fn record_provisional(
    store: &dyn ObjectStore,
    job: &Job,
    cfg: &ProcessConfig,
    attempt: u32,
    reason: String,
) -> Result<(), StoreError> {
    let mut r = base_result(job, cfg, attempt, Status::Failed);
    r.reason = Some(reason);
    r.provisional = true;
    write_result(store, job, r).await.map(|_| ())
}

/// The record of a job answered by outputs an identical earlier job made.
fn reused(job: &Job, cfg: &ProcessConfig, attempt: u32, outs: Vec<OutputInfo>) -> JobResult {
    let mut r = base_result(job, cfg, attempt, Status::Ok);
    r.reused = true;
    r.outputs = outs;
    r
}

/// The content address of each output of `job` made from the input with `input_digest`.
/// One output: by its pipeline (the same key whoever asks). A variant: by the whole list of
/// variants and its name, since its pixels depend on the decode the variants share.
/// The bytes of the marks `watermark` steps lay on it count too: a new mark under the same
/// name makes new outputs.
fn output_digests(job: &Job, input_digest: &str, overlays: &pixq_kernel::Overlays) -> Vec<String> {
    let k = pixq_kernel::KERNEL_VERSION;
    let marks: Vec<String> = overlays.iter().map(|(n, b)| format!("{n}={}", keys::content_digest(b))).collect();
    let with_marks = |s: String| if marks.is_empty() { s } else { format!("{s}|watermarks:{}", marks.join(",")) };
    if job.variants.is_empty() {
        return vec![keys::output_digest(input_digest, &with_marks(job.pipeline.canonical()), k)];
    }
    let all = job.canonical();
    job.variants
        .iter()
        .map(|v| keys::output_digest(input_digest, &with_marks(format!("{all}#{}", v.name)), k))
        .collect()
}

/// The outputs already written for every one of `digests`, or `None` when any is missing.
async fn existing_outputs(
    store: &dyn ObjectStore,
    job: &Job,
    digests: &[String],
) -> Result<Option<Vec<OutputInfo>>, StoreError> {
    let mut outs = Vec::with_capacity(digests.len());
    for (i, (digest, pipeline)) in digests.iter().zip(job.pipelines()).enumerate() {
        let Some(mut o) = existing_output(store, job, digest, pipeline.output.format).await? else {
            return Ok(None);
        };
        o.variant = job.variants.get(i).map(|v| v.name.clone());
        outs.push(o);
    }
    Ok(Some(outs))
}

/// An output already written for this digest, if any.
async fn existing_output(
    store: &dyn ObjectStore,
    job: &Job,
    digest: &str,
    want: Option<pixq_kernel::Format>,
) -> Result<Option<OutputInfo>, StoreError> {
    let stem = keys::output_key_stem(&job.output.prefix, digest);
    let found = store.list(&job.output.bucket, &stem).await?;
    for m in found {
        let ext = &m.key[stem.len()..];
        let Ok(format) = ext.parse::<pixq_kernel::Format>() else { continue };
        if want.is_none_or(|w| w == format) {
            return Ok(Some(OutputInfo {
                object: ObjectRef { bucket: job.output.bucket.clone(), key: m.key },
                format,
                width: None,
                height: None,
                bytes: m.size,
                variant: None,
            }));
        }
    }
    Ok(None)
}

/// Why a job did not finish, as the decision it calls for. Built from the store's and the
/// queue's `is_transient` and from the kernel's errors (all permanent but a cancel).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    /// May pass on a later attempt: store or queue I/O, throttling, 5xx, timeouts.
    #[error("{0}")]
    Transient(String),
    /// Will fail again: bad input, limits, a missing object, a refused message.
    #[error("{0}")]
    Permanent(String),
    /// Not started, or stopped, because the runtime is shutting down.
    #[error("released at shutdown")]
    Released,
    /// Would not fit this runtime (the Lambda function): to be forwarded, and why.
    #[error("to be forwarded: {0}")]
    Forward(String),
}

impl JobError {
    /// A store failure while doing `what`.
    pub fn store(what: &str, e: StoreError) -> JobError {
        let reason = format!("{what}: {e}");
        if e.is_transient() { JobError::Transient(reason) } else { JobError::Permanent(reason) }
    }
}

impl From<pixq_kernel::Error> for JobError {
    fn from(e: pixq_kernel::Error) -> JobError {
        match e {
            pixq_kernel::Error::Cancelled => JobError::Released,
            e @ pixq_kernel::Error::Unavailable(_) => JobError::Transient(e.to_string()),
            e => JobError::Permanent(e.to_string()),
        }
    }
}

/// `.at("doing what")?` on a store result.
trait At<T> {
    fn at(self, what: &str) -> Result<T, JobError>;
}

impl<T> At<T> for Result<T, StoreError> {
    fn at(self, what: &str) -> Result<T, JobError> {
        self.map_err(|e| JobError::store(what, e))
    }
}

/// Runs one job end to end. `attempt` is the message's receive count; `cancel` stops a job
/// that is still waiting for admission (it is then `Released`, not started). A kernel
/// running past `cfg.job_timeout` stops and the job fails permanently; dropping the returned
/// future (grace period over, Lambda deadline) stops a running kernel too. The one mapping
/// from [`JobError`] to an [`Outcome`]: permanent errors get a failed record.
pub async fn process(
    job: &Job,
    attempt: u32,
    store: &dyn ObjectStore,
    cfg: &ProcessConfig,
    admission: &Admission,
    cancel: &CancellationToken,
) -> Outcome {
    // Only the buckets this worker serves; a refused output bucket gets no record there.
    if !cfg.allows(&job.output.bucket) {
        return Outcome::Poison(format!("output bucket '{}' is not one this worker writes to", job.output.bucket));
    }
    match run(job, attempt, store, cfg, admission, cancel).await {
        Ok((r, outputs)) => match write_result_after(store, job, r, outputs).await {
            Ok(r) => Outcome::Done(Box::new(r)),
            Err(e) => Outcome::Retry(format!("writing the result record: {e}")),
        },
        Err(JobError::Permanent(reason)) => record_failure(store, job, cfg, attempt, reason).await,
        Err(JobError::Transient(reason)) => Outcome::Retry(reason),
        Err(JobError::Released) => Outcome::Released,
        Err(JobError::Forward(reason)) => Outcome::Forward(reason),
    }
}

/// The steps of a job; the record is written by the caller, after the outputs returned
/// unwritten (small ones, for the store to commit with the record).
async fn run(
    job: &Job,
    attempt: u32,
    store: &dyn ObjectStore,
    cfg: &ProcessConfig,
    admission: &Admission,
    cancel: &CancellationToken,
) -> Result<(JobResult, Vec<Pending>), JobError> {
    let permanent = |reason: String| Err(JobError::Permanent(reason));
    if !cfg.allows(&job.input.bucket) {
        return permanent(format!("input bucket '{}' is not one this worker reads from", job.input.bucket));
    }

    // 0. The marks `watermark` steps lay on the picture (small files; their bytes are part
    //    of the outputs' content addresses).
    let overlays = fetch_overlays(store, job).await?;

    // 1. An identical job (same input bytes, pipeline, kernel) already produced the output.
    if let Some(digest) = &job.input_digest {
        let digests = output_digests(job, digest, &overlays);
        if let Some(outs) = existing_outputs(store, job, &digests).await.at("looking for an existing output")? {
            return Ok((reused(job, cfg, attempt, outs), Vec::new()));
        }
    }

    // 2. Size from metadata before download.
    let t = Instant::now();
    let meta = store.head(&job.input.bucket, &job.input.key).await.at("reading the input's metadata")?;
    let Some(meta) = meta else {
        return permanent(format!("input object {}/{} not found", job.input.bucket, job.input.key));
    };
    let max = cfg.limits.max_input_bytes;
    if meta.size > max {
        return permanent(format!("input is {} bytes, over the limit of {max} bytes", meta.size));
    }
    let mut turn = admission.read_turn(meta.size, cancel).await.ok_or(JobError::Released)?;
    let (bytes, known) = match store.get_known(&job.input.bucket, &job.input.key, max).await {
        Ok(got) => got,
        // Grown since its size was read (or never as small as the metadata said).
        Err(StoreError::TooLarge { .. }) => {
            return permanent(format!("input is over the limit of {max} bytes (it grew after its size was read)"));
        }
        Err(e) => return Err(JobError::store("downloading the input", e)),
    };

    // 3. The bytes must be the input the message names (hashed off the async threads),
    //    unless the store hashed these very bytes as it read them.
    let (bytes, digest_of_input) = match (&job.input_digest, known) {
        (Some(claimed), Some(known)) if *claimed == known => (bytes, known),
        (None, Some(known)) if meta.etag.is_none() => (bytes, known),
        // A small input is hashed in place (well under a millisecond); a photo off the
        // async threads.
        (Some(claimed), _) if bytes.len() <= INLINE_BYTES => {
            verify_digest(claimed, meta.etag.as_deref(), &bytes).map_err(JobError::Permanent)?;
            (bytes, claimed.clone())
        }
        (Some(claimed), _) => {
            let (claim, etag) = (claimed.clone(), meta.etag.clone());
            let hashed = tokio::task::spawn_blocking(move || (verify_digest(&claim, etag.as_deref(), &bytes), bytes));
            let (checked, bytes) = hashed.await.map_err(|e| JobError::Transient(format!("hashing the input: {e}")))?;
            checked.map_err(JobError::Permanent)?;
            (bytes, claimed.clone())
        }
        (None, _) => match &meta.etag {
            Some(etag) => (bytes, format!("etag:{etag}")),
            None if bytes.len() <= INLINE_BYTES => {
                let d = keys::content_digest(&bytes);
                (bytes, d)
            }
            None => {
                let hashed = tokio::task::spawn_blocking(move || {
                    let d = keys::content_digest(&bytes);
                    (bytes, d)
                });
                hashed.await.map_err(|e| JobError::Transient(format!("hashing the input: {e}")))?
            }
        },
    };
    turn.read();
    let download_ms = ms_since(t);
    let digests = output_digests(job, &digest_of_input, &overlays);
    // A job that came without a digest (an S3 notification, a local file linked unread) is
    // looked up now: an identical earlier job already made this output.
    if job.input_digest.is_none()
        && let Some(outs) = existing_outputs(store, job, &digests).await.at("looking for an existing output")?
    {
        return Ok((reused(job, cfg, attempt, outs), Vec::new()));
    }

    // 4. Plan from the header (every step's size, the peak memory), admission under the
    //    memory budget, then the kernel under the time limit.
    let (limits, pipelines) = (cfg.limits, job.pipelines().into_iter().cloned().collect::<Vec<_>>());
    let plan_all = move |bytes: &[u8], pipelines: &[pixq_kernel::Pipeline]| {
        pixq_kernel::plan_all(bytes, &pipelines.iter().collect::<Vec<_>>(), &limits)
    };
    let in_child = pixq_kernel::isolation::starts_a_process(&bytes);
    let (bytes, pipelines, planned) = if in_child {
        // A HEIF header is read by a child process: waited for on a blocking thread.
        tokio::task::spawn_blocking(move || {
            let planned = plan_all(&bytes, &pipelines);
            (bytes, pipelines, planned)
        })
        .await
        .map_err(|e| match e.is_panic() {
            true => JobError::Permanent("the image kernel panicked on this input while planning".into()),
            false => JobError::Transient(format!("planning: {e}")),
        })?
    } else {
        let planned = plan_all(&bytes, &pipelines);
        (bytes, pipelines, planned)
    };
    let (probe, plan) = planned?;
    if let Some(fit) = &cfg.forward
        && job.forwarded.is_none()
    {
        let routed = fit.route(&plan);
        if routed.route == Route::Ec2 {
            return Err(JobError::Forward(routed.reason));
        }
    }
    plan.check_budget(admission.budget_bytes())?;
    let admitted = admission.admit(plan.peak_bytes, plan.cpu_ns, cancel).await.ok_or(JobError::Released)?;
    let input_bytes = bytes.len() as u64;
    let stop = Stop::new().with_time_limit(cfg.job_timeout);
    let _cancel_kernel = CancelOnDrop(stop.clone());
    // The admission goes with the kernel and comes back with its answer, which a lane
    // thread delivers only once it is idle again: the next job admitted finds that thread
    // (and its warm buffers) free instead of starting another. Ended with the answer, even
    // if this task is dropped meanwhile; the output is written while the next job computes.
    let kernel = move || {
        let out = run_kernel(limits, &bytes, &probe, &pipelines, overlays, &stop);
        (out, bytes, (admitted, turn))
    };
    // A job this small (an icon, a 64 px PNG) runs in well under a millisecond: in place,
    // rather than paying two thread hand-offs that cost more than the work. Not one whose
    // decode waits for a child process.
    let px = |(w, h): (u32, u32)| u64::from(w) * u64::from(h);
    let largest = plan.steps.iter().map(|&(w, h, _)| px((w, h))).chain([px(plan.decoded), px(plan.output)]).max();
    let answer = if largest.unwrap_or(0) <= INLINE_PIXELS && !in_child {
        let started = Instant::now();
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(kernel));
        tracing::trace!(us = started.elapsed().as_micros() as u64, "kernel ran in place");
        out.map_err(|_| "the image kernel panicked on this input".to_string())
    } else {
        // On a lane thread: the one that finished last, so its decoder state and memory are
        // warm (`lanes`).
        crate::lanes::LANES.run(kernel).await.map_err(|p| format!("the image kernel panicked on this input: {}", p.0))
    };
    let (outs, input, admitted) = match answer {
        Ok(a) => a,
        Err(reason) => return permanent(reason),
    };
    // The input's buffer goes back to the store for a later read (`buffers`) before the
    // hold on it ends, so the next read finds it.
    store.recycle(input);
    drop(admitted);
    let outs = outs?;

    // 5. The outputs; the caller writes the record after them (a record never points at a
    //    missing output).
    let t = Instant::now();
    if outs.len() != digests.len() {
        return permanent(format!("the kernel made {} outputs for {} variants", outs.len(), digests.len()));
    }
    let mut r = base_result(job, cfg, attempt, Status::Ok);
    r.input_bytes = Some(input_bytes);
    // Outputs the store commits with the record wait for it; the others are written now.
    let small = store.small_object_max();
    let mut pending = Vec::new();
    for (i, (out, digest)) in outs.into_iter().zip(&digests).enumerate() {
        let key = format!("{}{}", keys::output_key_stem(&job.output.prefix, digest), out.format.extension());
        let size = out.bytes.len() as u64;
        if out.bytes.len() <= small {
            pending.push((key.clone(), out.bytes, out.format.mime()));
        } else {
            store.put(&job.output.bucket, &key, out.bytes, out.format.mime()).await.at("writing the output")?;
        }
        r.source_size = Some((out.source.width, out.source.height));
        r.outputs.push(OutputInfo {
            object: ObjectRef { bucket: job.output.bucket.clone(), key },
            format: out.format,
            width: Some(out.width),
            height: Some(out.height),
            bytes: size,
            variant: job.variants.get(i).map(|v| v.name.clone()),
        });
        r.timings.decode_ms += out.timings.decode.as_secs_f64() * 1000.0;
        r.timings.ops_ms += out.timings.ops.as_secs_f64() * 1000.0;
        r.timings.encode_ms += out.timings.encode.as_secs_f64() * 1000.0;
    }
    r.timings.download_ms = download_ms;
    r.timings.upload_ms = ms_since(t);
    Ok((r, pending))
}

#[cfg(test)]
mod tests {
    use super::verify_digest;
    use crate::keys;

    /// Every form of digest a message may carry, right and wrong: BLAKE3 (what pixq writes
    /// now), SHA-256 (older clients, other submitters), an ETag, and names that are none of
    /// them. Only the digest of these very bytes passes.
    #[test]
    fn the_digest_a_message_claims_must_be_the_bytes_downloaded() {
        let bytes = b"some image bytes";
        let blake = keys::content_digest(bytes);
        let sha = format!("sha256:{}", keys::sha256_hex(bytes));
        assert!(verify_digest(&blake, None, bytes).is_ok());
        assert!(verify_digest(&sha, None, bytes).is_ok());
        assert!(verify_digest("etag:abc", Some("abc"), bytes).is_ok());
        let other = b"other image bytes";
        for claimed in [
            keys::content_digest(other),
            format!("sha256:{}", keys::sha256_hex(other)),
            "blake3:".to_string(),
            "sha256:".to_string(),
            format!("{blake}0"),
            blake.to_uppercase(),
            blake.replace("blake3:", "sha256:"),
            sha.replace("sha256:", "blake3:"),
            format!("md5:{}", &blake[7..39]),
            blake[7..].to_string(),
        ] {
            let e = verify_digest(&claimed, Some("abc"), bytes).unwrap_err();
            assert!(e.contains("digest"), "{claimed}: {e}");
        }
        assert!(verify_digest("etag:abc", Some("abd"), bytes).is_err());
        assert!(verify_digest("etag:abc", None, bytes).is_err());
    }
}
