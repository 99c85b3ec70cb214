//! The process step and the worker loop on the embedded default: poison inputs end as
//! failed records and dead letters while good jobs around them finish; transient failures
//! are retried; identical jobs are answered from existing outputs; shutdown is graceful.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use pixq_jobs::batch::{self, batch_status};
use pixq_jobs::kernel::{Channels, Format, OutputSpec, Pipeline, Raster};
use pixq_jobs::keys;
use pixq_jobs::process::{Admission, ProcessConfig};
use pixq_jobs::queue::sqlite::{QueueConfig, SqliteQueue};
use pixq_jobs::queue::{Queue, SendOptions};
use pixq_jobs::schema::{Job, ObjectRef, OutputLocation, Status};
use pixq_jobs::store::fs::FsStore;
use pixq_jobs::store::{ObjectMeta, ObjectStore, StoreError};
use pixq_jobs::worker::{self, WorkerConfig};
use tokio_util::sync::CancellationToken;

mod common;

const BUCKET: &str = "pixq";

fn photo(w: u32, h: u32) -> Raster {
    Raster::from_fn(w, h, Channels::Rgb, |x, y, p| {
        p.copy_from_slice(&[(x % 256) as u8, (y % 256) as u8, ((x * y) % 256) as u8])
    })
}

fn jpeg(w: u32, h: u32) -> Vec<u8> {
    pixq_jobs::kernel::encode(&photo(w, h), Format::Jpeg, &OutputSpec::default()).unwrap()
}

/// A PNG header declaring 60000 x 60000 (the body never gets read).
fn png_bomb() -> Vec<u8> {
    let small = pixq_jobs::kernel::encode(&photo(8, 8), Format::Png, &OutputSpec::default()).unwrap();
    let mut b = small.clone();
    b[16..20].copy_from_slice(&60_000u32.to_be_bytes());
    b[20..24].copy_from_slice(&60_000u32.to_be_bytes());
    let crc = crc32(&b[12..29]);
    b[29..33].copy_from_slice(&crc.to_be_bytes());
    b
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &byte in data {
        c ^= u32::from(byte);
        for _ in 0..8 {
            c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
        }
    }
    !c
}

struct Env {
    _dir: tempfile::TempDir,
    store: Arc<FsStore>,
    queue: Arc<SqliteQueue>,
}

fn env(max_receives: u32) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FsStore::new(dir.path().join("store")));
    let queue = Arc::new(
        SqliteQueue::open(&dir.path().join("q.db"), QueueConfig { max_receives, ..QueueConfig::default() }).unwrap(),
    );
    Env { _dir: dir, store, queue }
}

async fn upload_job(
    store: &dyn ObjectStore,
    batch: &str,
    i: usize,
    name: &str,
    bytes: Option<Vec<u8>>,
    ops: &str,
) -> Job {
    let key = format!("inputs/{batch}/{name}");
    let digest = bytes.as_ref().map(|b| keys::content_digest(b));
    if let Some(b) = bytes {
        store.put(BUCKET, &key, b, "application/octet-stream").await.unwrap();
    }
    let out = OutputLocation { bucket: BUCKET.into(), prefix: "outputs/".into() };
    batch::new_job(batch, i, ObjectRef { bucket: BUCKET.into(), key }, digest, &Pipeline::parse(ops).unwrap(), &out)
}

fn fast_cfg() -> WorkerConfig {
    WorkerConfig {
        concurrency: 2,
        visibility: Duration::from_secs(30),
        wait: Duration::from_millis(50),
        retry: pixq_jobs::settle::RetryPolicy { base: Duration::from_millis(20), max: Duration::from_millis(200) },
        grace: Duration::from_secs(10),
        ..WorkerConfig::default()
    }
}

/// Runs a worker until `done` says so (or 30 s pass), then stops it.
async fn run_until(q: Arc<dyn Queue>, s: Arc<dyn ObjectStore>, cfg: WorkerConfig, mut done: impl AsyncFnMut() -> bool) {
    let stop = CancellationToken::new();
    let h = tokio::spawn(worker::run(q, s, cfg, stop.clone()));
    let t = std::time::Instant::now();
    while !done().await {
        assert!(t.elapsed() < Duration::from_secs(30), "worker did not finish in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    h.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_inputs_fail_alone_and_good_jobs_finish() {
    let e = env(3);
    let s = e.store.as_ref();
    let good = jpeg(320, 240);
    let mut truncated = jpeg(320, 240);
    truncated.truncate(truncated.len() / 2);
    let jobs = vec![
        upload_job(s, "b", 0, "good1.jpg", Some(good.clone()), "thumbnail:64").await,
        upload_job(s, "b", 1, "truncated.jpg", Some(truncated), "thumbnail:64").await,
        upload_job(s, "b", 2, "empty.jpg", Some(Vec::new()), "thumbnail:64").await,
        upload_job(s, "b", 3, "text.jpg", Some(b"this is not a photo".to_vec()), "thumbnail:64").await,
        upload_job(s, "b", 4, "bomb.png", Some(png_bomb()), "thumbnail:64").await,
        upload_job(s, "b", 5, "missing.jpg", None, "thumbnail:64").await,
        upload_job(s, "b", 6, "good2.jpg", Some(good), "grayscale,format:png").await,
    ];
    batch::enqueue(e.queue.as_ref(), &jobs, false).await.unwrap();
    // A message that is not JSON, and a job with an unknown op.
    e.queue.send("{this is not json", &SendOptions::default()).await.unwrap();
    let mut bad_op: serde_json::Value = serde_json::from_str(&jobs[0].to_json()).unwrap();
    bad_op["id"] = "b-bad-op".into();
    bad_op["pipeline"]["ops"][0] = serde_json::json!({"op": "wobble", "size": 3});
    e.queue.send(&bad_op.to_string(), &SendOptions::default()).await.unwrap();

    let (q, st) = (e.queue.clone(), e.store.clone());
    run_until(e.queue.clone(), e.store.clone(), fast_cfg(), async || {
        let c = q.counts().await.unwrap();
        c.visible + c.in_flight + c.delayed == 0
            && batch_status(st.as_ref(), BUCKET, "b").await.unwrap().results.len() == 8
    })
    .await;

    let status = batch_status(e.store.as_ref(), BUCKET, "b").await.unwrap();
    let by_id = |i: usize| status.results.iter().find(|r| r.job_id == jobs[i].id).unwrap();
    assert_eq!(by_id(0).status, Status::Ok);
    assert_eq!(by_id(6).status, Status::Ok);
    for (i, want) in
        [(1, "truncated"), (2, "empty"), (3, "not a supported image"), (4, "over the limit"), (5, "not found")]
    {
        let r = by_id(i);
        assert_eq!(r.status, Status::Failed, "job {i}");
        let reason = r.reason.as_deref().unwrap();
        assert!(reason.contains(want), "job {i}: {reason}");
        assert_eq!(r.attempts, 1, "permanent errors are not retried");
    }
    // The job with an unknown op names its id and batch: it is recorded, not only buried.
    let bad = status.results.iter().find(|r| r.job_id == "b-bad-op").unwrap();
    assert_eq!(bad.status, Status::Failed);
    assert!(bad.reason.as_deref().unwrap().contains("wobble"), "{:?}", bad.reason);
    let dead = e.queue.dead_letters(100).await.unwrap();
    assert_eq!(dead.len(), 7, "{dead:#?}");
    assert!(dead.iter().any(|d| d.reason.contains("malformed job JSON")));
    assert!(dead.iter().any(|d| d.reason.contains("wobble")));
    assert!(dead.iter().all(|d| d.receive_count == 1));
    // Outputs are where the records say, with the requested size.
    let out = &by_id(0).outputs[0];
    let bytes = e.store.get(&out.object.bucket, &out.object.key).await.unwrap();
    let img = pixq_jobs::kernel::decode(&bytes, &Default::default()).unwrap();
    assert_eq!((img.width(), img.height(), out.width, out.height), (64, 48, Some(64), Some(48)));
    assert_eq!(by_id(6).outputs[0].format, Format::Png);
}

/// What a [`Hooked`] store does before each output write.
#[async_trait]
trait BeforeOutputPut: Send + Sync + std::fmt::Debug {
    async fn before(&self) -> Result<(), StoreError>;
}

/// A filesystem store that runs a hook before every write under `outputs/`.
#[derive(Debug)]
struct Hooked<H> {
    inner: FsStore,
    hook: H,
}

#[async_trait]
impl<H: BeforeOutputPut> ObjectStore for Hooked<H> {
    async fn head(&self, b: &str, k: &str) -> Result<Option<ObjectMeta>, StoreError> {
        self.inner.head(b, k).await
    }
    async fn get(&self, b: &str, k: &str) -> Result<Vec<u8>, StoreError> {
        self.inner.get(b, k).await
    }
    async fn put(&self, b: &str, k: &str, body: Vec<u8>, ct: &str) -> Result<(), StoreError> {
        if k.starts_with("outputs/") {
            self.hook.before().await?;
        }
        self.inner.put(b, k, body, ct).await
    }
    async fn list(&self, b: &str, p: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.inner.list(b, p).await
    }
    async fn delete(&self, b: &str, k: &str) -> Result<(), StoreError> {
        self.inner.delete(b, k).await
    }
}

/// Fails the first `n` output writes with a transient error.
#[derive(Debug)]
struct Flaky {
    failures_left: AtomicU32,
}

#[async_trait]
impl BeforeOutputPut for Flaky {
    async fn before(&self) -> Result<(), StoreError> {
        if self.failures_left.load(Ordering::SeqCst) > 0 {
            self.failures_left.fetch_sub(1, Ordering::SeqCst);
            return Err(StoreError::Transient("503 Slow Down".into()));
        }
        Ok(())
    }
}

fn flaky_store(inner: &FsStore, failures: u32) -> Arc<Hooked<Flaky>> {
    Arc::new(Hooked { inner: inner.clone(), hook: Flaky { failures_left: AtomicU32::new(failures) } })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried_with_backoff_then_dead_lettered() {
    let e = env(3);
    let flaky = flaky_store(&e.store, 2);
    let job = upload_job(flaky.as_ref(), "t", 0, "a.jpg", Some(jpeg(64, 64)), "invert").await;
    batch::enqueue(e.queue.as_ref(), std::slice::from_ref(&job), false).await.unwrap();
    let st = flaky.clone();
    run_until(e.queue.clone(), flaky.clone(), fast_cfg(), async || {
        !batch_status(st.as_ref(), BUCKET, "t").await.unwrap().results.is_empty()
    })
    .await;
    let r = &batch_status(flaky.as_ref(), BUCKET, "t").await.unwrap().results[0];
    assert_eq!((r.status, r.attempts), (Status::Ok, 3), "{r:?}");

    // Never succeeding: after max receives it is recorded as failed and dead-lettered.
    let always = flaky_store(&e.store, 1000);
    let job = upload_job(always.as_ref(), "u", 0, "b.jpg", Some(jpeg(64, 64)), "flip:h").await;
    batch::enqueue(e.queue.as_ref(), std::slice::from_ref(&job), false).await.unwrap();
    let q = e.queue.clone();
    run_until(e.queue.clone(), always.clone(), fast_cfg(), async || q.counts().await.unwrap().dead == 1).await;
    let r = &batch_status(always.as_ref(), BUCKET, "u").await.unwrap().results[0];
    assert_eq!(r.status, Status::Failed);
    assert!(
        r.reason.as_deref().unwrap().contains("gave up after 3 attempts")
            && r.reason.as_deref().unwrap().contains("503")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_jobs_reuse_the_output_and_duplicates_rewrite_the_same_bytes() {
    let e = env(5);
    let bytes = jpeg(200, 100);
    let a = upload_job(e.store.as_ref(), "r1", 0, "x.jpg", Some(bytes.clone()), "thumbnail:50,format:png").await;
    let b = upload_job(e.store.as_ref(), "r2", 0, "y.jpg", Some(bytes.clone()), "thumbnail:50,format:png").await;
    let cfg = ProcessConfig::default();
    let adm = Admission::new(64);
    let never = CancellationToken::new();
    let first = match pixq_jobs::process::process(&a, 1, e.store.as_ref(), &cfg, &adm, &never).await {
        pixq_jobs::process::Outcome::Done(r) => r,
        o => panic!("{o:?}"),
    };
    assert!(!first.reused);
    let second = match pixq_jobs::process::process(&b, 1, e.store.as_ref(), &cfg, &adm, &never).await {
        pixq_jobs::process::Outcome::Done(r) => r,
        o => panic!("{o:?}"),
    };
    assert!(second.reused);
    assert_eq!(second.outputs[0].object, first.outputs[0].object);
    // Without a digest in the job (e.g. an S3 event), the output key is the same and the
    // bytes written are identical.
    let mut c = a.clone();
    c.input_digest = None;
    let key = &first.outputs[0].object.key;
    let before = e.store.get(BUCKET, key).await.unwrap();
    let third = match pixq_jobs::process::process(&c, 2, e.store.as_ref(), &cfg, &adm, &never).await {
        pixq_jobs::process::Outcome::Done(r) => r,
        o => panic!("{o:?}"),
    };
    assert_eq!(&third.outputs[0].object.key, key);
    assert_eq!(e.store.get(BUCKET, key).await.unwrap(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_keeps_a_long_job_invisible() {
    let e = env(5);
    // A job slower than the visibility timeout (heavy blur on a 4 MP image).
    let job = upload_job(
        e.store.as_ref(),
        "h",
        0,
        "big.png",
        Some(
            pixq_jobs::kernel::encode(
                &photo(2400, 1600),
                Format::Png,
                &OutputSpec { compression: Some(1), ..Default::default() },
            )
            .unwrap(),
        ),
        "blur:30,format:jpeg",
    )
    .await;
    batch::enqueue(e.queue.as_ref(), std::slice::from_ref(&job), false).await.unwrap();
    let cfg = WorkerConfig { visibility: Duration::from_millis(300), concurrency: 1, ..fast_cfg() };
    let stop = CancellationToken::new();
    let t = std::time::Instant::now();
    let worker = tokio::spawn(worker::run(e.queue.clone(), e.store.clone(), cfg, stop.clone()));
    while e.queue.counts().await.unwrap().in_flight == 0 {
        assert!(t.elapsed() < Duration::from_secs(30), "the worker never took the job");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // From now on a second consumer polls all along: it must never see the message while
    // the job runs (the heartbeat keeps renewing its 300 ms visibility).
    let spy = e.queue.clone();
    let stop_spy = CancellationToken::new();
    let spy_stop = stop_spy.clone();
    let spy_task = tokio::spawn(async move {
        let mut stolen = 0;
        while !spy_stop.is_cancelled() {
            stolen += spy.receive(1, Duration::from_secs(60), Duration::from_millis(50)).await.unwrap().len();
        }
        stolen
    });
    while batch_status(e.store.as_ref(), BUCKET, "h").await.unwrap().results.is_empty() {
        assert!(t.elapsed() < Duration::from_secs(120), "the job did not finish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop_spy.cancel();
    stop.cancel();
    worker.await.unwrap();
    assert_eq!(spy_task.await.unwrap(), 0, "the message became visible while its job ran");
    assert!(
        t.elapsed() > Duration::from_millis(600),
        "the job was not slow enough to prove anything ({:?})",
        t.elapsed()
    );
    let r = &batch_status(e.store.as_ref(), BUCKET, "h").await.unwrap().results[0];
    assert_eq!((r.status, r.attempts), (Status::Ok, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_the_job_in_hand_and_leaves_the_rest_queued() {
    let e = env(5);
    let mut jobs = Vec::new();
    for i in 0..6 {
        jobs.push(
            upload_job(
                e.store.as_ref(),
                "s",
                i,
                &format!("{i}.png"),
                Some(
                    pixq_jobs::kernel::encode(
                        &photo(1600, 1200),
                        Format::Png,
                        &OutputSpec { compression: Some(1), ..Default::default() },
                    )
                    .unwrap(),
                ),
                &format!("blur:{},format:jpeg", 10 + i),
            )
            .await,
        );
    }
    batch::enqueue(e.queue.as_ref(), &jobs, false).await.unwrap();
    let stop = CancellationToken::new();
    let cfg = WorkerConfig { concurrency: 1, ..fast_cfg() };
    let h = tokio::spawn(worker::run(e.queue.clone(), e.store.clone(), cfg, stop.clone()));
    // Wait until one job is in flight, then ask for shutdown.
    loop {
        if e.queue.counts().await.unwrap().in_flight > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.cancel();
    let stats = h.await.unwrap();
    let [received, done, ..] = stats.snapshot();
    let c = e.queue.counts().await.unwrap();
    assert_eq!(c.in_flight, 0, "nothing may stay hidden after a graceful stop");
    assert_eq!(done as usize + c.visible as usize, 6, "received {received}, done {done}, {c:?}");
    assert!(done >= 1);
    let status = batch_status(e.store.as_ref(), BUCKET, "s").await.unwrap();
    assert_eq!(status.ok(), done as usize);
}

#[tokio::test]
async fn admission_keeps_two_big_images_apart() {
    let adm = Admission::new(64);
    let never = CancellationToken::new();
    let first = adm.admit(50_000_000, 0, &never).await.unwrap();
    let second = tokio::time::timeout(Duration::from_millis(50), adm.admit(50_000_000, 0, &never)).await;
    assert!(second.is_err(), "a second 48 MB job was admitted beside the first under a 64 MB budget");
    let small = tokio::time::timeout(Duration::from_millis(50), adm.admit(4_000_000, 0, &never)).await;
    assert!(small.is_ok(), "a 4 MB job should fit beside a 48 MB one");
    drop(small);
    drop(first);
    assert!(tokio::time::timeout(Duration::from_millis(500), adm.admit(50_000_000, 0, &never)).await.is_ok());
    // Shutdown releases a job still waiting for admission.
    let _hold = adm.admit(64_000_000, 0, &never).await.unwrap();
    let cancel = CancellationToken::new();
    cancel.cancel();
    assert!(adm.admit(10_000_000, 0, &cancel).await.is_none());
}

#[tokio::test]
async fn one_lane_admits_one_kernel_at_a_time() {
    let adm = Admission::with_lanes(64, 1);
    let never = CancellationToken::new();
    let first = adm.admit(1_000_000, 0, &never).await.unwrap();
    let second = tokio::time::timeout(Duration::from_millis(50), adm.admit(1_000_000, 0, &never)).await;
    assert!(second.is_err(), "a second kernel was admitted on a single lane");
    drop(first);
    assert!(tokio::time::timeout(Duration::from_millis(500), adm.admit(1_000_000, 0, &never)).await.is_ok());
}

/// Local reads with one lane: one read at a time, at most two inputs held between their
/// read and their kernel's end, small inputs never wait, a waiting read ends on shutdown.
/// Paused clock: a read that cannot start is seen to wait without any real sleep.
#[tokio::test(start_paused = true)]
async fn local_reads_take_turns_and_hold_two_inputs_per_lane() {
    let adm = Admission::with_lanes(64, 1).reading_at_most(1);
    let never = CancellationToken::new();
    let (big, small) = (1u64 << 20, 1000u64);
    let waits = |t: Result<Option<_>, _>| t.is_err();
    let mut a = adm.read_turn(big, &never).await.unwrap();
    assert!(waits(tokio::time::timeout(Duration::from_secs(5), adm.read_turn(big, &never)).await), "two reads at once");
    a.read();
    let mut b = adm.read_turn(big, &never).await.unwrap();
    b.read();
    assert!(
        waits(tokio::time::timeout(Duration::from_secs(5), adm.read_turn(big, &never)).await),
        "a third input held on one lane"
    );
    assert!(adm.read_turn(small, &never).await.is_some(), "a small input waited");
    drop(a);
    let _c = adm.read_turn(big, &never).await.unwrap();
    let stop = CancellationToken::new();
    stop.cancel();
    assert!(adm.read_turn(big, &stop).await.is_none(), "a waiting read outlived shutdown");
    drop(b);
}

/// A free lane goes to the waiting job with the most work (its plan's kernel time), not the
/// one that was ready first, so a large job ready late is not left to run alone at the end;
/// a job that has waited a second goes next whatever its size; a waiter that gives up
/// passes its turn on. The clock is paused: tokio moves it only when every task waits, so
/// no step depends on how fast the machine is.
#[tokio::test(start_paused = true)]
async fn a_free_lane_goes_to_the_waiting_job_with_the_most_work() {
    let adm = Admission::with_lanes(1024, 1);
    let never = CancellationToken::new();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let wait_for = |work: u64| {
        let (adm, tx, never) = (adm.clone(), tx.clone(), never.clone());
        tokio::spawn(async move {
            let a = adm.admit(1_000_000, work, &never).await.unwrap();
            tx.send(work).unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
            drop(a);
        })
    };
    let hold = adm.admit(1_000_000, 0, &never).await.unwrap();
    for work in [10u64, 30, 20] {
        wait_for(work);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // One that gives up while waiting: it is skipped.
    let gave_up = tokio::time::timeout(Duration::from_millis(5), adm.admit(1_000_000, 99, &never)).await;
    assert!(gave_up.is_err());
    drop(hold);
    let mut order = Vec::new();
    for _ in 0..3 {
        order.push(rx.recv().await.unwrap());
    }
    assert_eq!(order, [30, 20, 10]);
    // Past the wait limit, a small job goes before a larger one that came later.
    let hold = adm.admit(1_000_000, 0, &never).await.unwrap();
    wait_for(1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    wait_for(100);
    tokio::time::sleep(Duration::from_millis(5)).await;
    drop(hold);
    assert_eq!((rx.recv().await.unwrap(), rx.recv().await.unwrap()), (1, 100));
}

/// Output writes wait until as many as the barrier counts are waiting at once.
#[derive(Debug)]
struct Gate {
    barrier: tokio::sync::Barrier,
}

#[async_trait]
impl BeforeOutputPut for Gate {
    async fn before(&self) -> Result<(), StoreError> {
        self.barrier.wait().await;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_kernel_runs_while_an_output_is_written() {
    // One kernel lane. Each output write waits until a second one is waiting too, which can
    // only happen if a job leaves its lane when its kernel ends and the next job (already in
    // hand: prefetch) computes meanwhile. Holding the lane through the write would stall.
    let e = env(5);
    let gate = Arc::new(Hooked { inner: (*e.store).clone(), hook: Gate { barrier: tokio::sync::Barrier::new(2) } });
    let mut jobs = Vec::new();
    for i in 0..4 {
        jobs.push(
            upload_job(gate.as_ref(), "g", i, &format!("{i}.jpg"), Some(jpeg(64 + i as u32, 48)), "grayscale").await,
        );
    }
    batch::enqueue(e.queue.as_ref(), &jobs, false).await.unwrap();
    let cfg = WorkerConfig { concurrency: 1, prefetch: 1, ..fast_cfg() };
    let q = e.queue.clone();
    let finished = tokio::time::timeout(
        Duration::from_secs(20),
        run_until(e.queue.clone(), gate.clone(), cfg, async || {
            let c = q.counts().await.unwrap();
            c.visible + c.in_flight + c.delayed == 0
        }),
    )
    .await;
    assert!(finished.is_ok(), "output writes never overlapped a kernel");
    let st = batch_status(gate.as_ref(), BUCKET, "g").await.unwrap();
    assert_eq!(st.ok(), 4);
}

/// A queue that records every acknowledgement and makes the first batch delete slow.
#[derive(Debug)]
struct AckSpy {
    inner: SqliteQueue,
    batches: std::sync::Mutex<Vec<usize>>,
    single: AtomicU32,
}

#[async_trait]
impl Queue for AckSpy {
    async fn send(&self, body: &str, o: &SendOptions) -> Result<String, pixq_jobs::queue::QueueError> {
        self.inner.send(body, o).await
    }
    async fn send_batch(&self, e: &[(String, SendOptions)]) -> Result<Vec<String>, pixq_jobs::queue::QueueError> {
        self.inner.send_batch(e).await
    }
    async fn receive(
        &self,
        max: usize,
        vis: Duration,
        wait: Duration,
    ) -> Result<Vec<pixq_jobs::queue::Message>, pixq_jobs::queue::QueueError> {
        self.inner.receive(max, vis, wait).await
    }
    async fn delete(&self, r: &str) -> Result<(), pixq_jobs::queue::QueueError> {
        self.single.fetch_add(1, Ordering::SeqCst);
        self.inner.delete(r).await
    }
    async fn delete_batch(&self, rs: &[String]) -> Result<(), pixq_jobs::queue::QueueError> {
        let first = {
            let mut b = self.batches.lock().unwrap();
            b.push(rs.len());
            b.len() == 1
        };
        if first {
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
        self.inner.delete_batch(rs).await
    }
    async fn change_visibility(&self, r: &str, t: Duration) -> Result<(), pixq_jobs::queue::QueueError> {
        self.inner.change_visibility(r, t).await
    }
    async fn retry_later(&self, r: &str, d: Duration, why: &str) -> Result<(), pixq_jobs::queue::QueueError> {
        self.inner.retry_later(r, d, why).await
    }
    async fn dead_letter(&self, m: &pixq_jobs::queue::Message, why: &str) -> Result<(), pixq_jobs::queue::QueueError> {
        self.inner.dead_letter(m, why).await
    }
    async fn counts(&self) -> Result<pixq_jobs::queue::Counts, pixq_jobs::queue::QueueError> {
        self.inner.counts().await
    }
    async fn dead_letters(&self, n: usize) -> Result<Vec<pixq_jobs::queue::DeadLetter>, pixq_jobs::queue::QueueError> {
        self.inner.dead_letters(n).await
    }
    async fn redrive(&self, n: usize) -> Result<usize, pixq_jobs::queue::QueueError> {
        self.inner.redrive(n).await
    }
    fn max_receives(&self) -> u32 {
        self.inner.max_receives()
    }
    fn is_fifo(&self) -> bool {
        self.inner.is_fifo()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_messages_are_deleted_in_batches() {
    let e = env(5);
    let spy = Arc::new(AckSpy { inner: (*e.queue).clone(), batches: Default::default(), single: AtomicU32::new(0) });
    let mut jobs = Vec::new();
    for i in 0..8 {
        jobs.push(
            upload_job(e.store.as_ref(), "a", i, &format!("{i}.jpg"), Some(jpeg(32, 24 + i as u32)), "grayscale").await,
        );
    }
    batch::enqueue(e.queue.as_ref(), &jobs, false).await.unwrap();
    let q = e.queue.clone();
    // While the first delete is slow, the other jobs finish: their receipts go in one batch.
    run_until(spy.clone(), e.store.clone(), fast_cfg(), async || {
        let c = q.counts().await.unwrap();
        c.visible + c.in_flight + c.delayed == 0
    })
    .await;
    let batches = spy.batches.lock().unwrap().clone();
    assert_eq!(batches.iter().sum::<usize>(), 8, "{batches:?}");
    assert!(batches.iter().any(|&n| n > 1), "never batched: {batches:?}");
    assert!(batches.iter().all(|&n| n <= 10), "{batches:?}");
    assert_eq!(spy.single.load(Ordering::SeqCst), 0);
    assert_eq!(batch_status(e.store.as_ref(), BUCKET, "a").await.unwrap().ok(), 8);
}

/// Output writes never complete: the job's attempt hangs until its worker gives it up.
#[derive(Debug)]
struct Stuck;

#[async_trait]
impl BeforeOutputPut for Stuck {
    async fn before(&self) -> Result<(), StoreError> {
        std::future::pending::<()>().await;
        Ok(())
    }
}

fn png(w: u32, h: u32) -> Vec<u8> {
    pixq_jobs::kernel::encode(&photo(w, h), Format::Png, &OutputSpec { compression: Some(1), ..Default::default() })
        .unwrap()
}

/// Issue 8, items 2-4: a message out of the parser's ranges, a forged input digest, a job
/// over the memory budget and a job over its time limit each end as a recorded failure with
/// a reason naming the figures; the worker survives them and the good job beside them runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_messages_and_jobs_end_as_recorded_failures() {
    let e = env(3);
    let s = e.store.as_ref();
    let victim = jpeg(64, 48);
    let attacker = jpeg(80, 60);
    let good = upload_job(s, "h", 0, "good.jpg", Some(jpeg(200, 100)), "thumbnail:50").await;
    let mut forged = upload_job(s, "h", 1, "forged.jpg", Some(attacker), "thumbnail:50").await;
    forged.input_digest = Some(keys::content_digest(&victim));
    let budget = upload_job(s, "h", 2, "tiny.png", Some(png(8, 8)), "resize:16384:16384:fill,blur:1").await;
    let slow = upload_job(s, "h", 3, "slow.png", Some(png(1500, 1000)), &vec!["blur:80"; 24].join(",")).await;
    let range = upload_job(s, "h", 4, "range.jpg", Some(jpeg(50, 50)), "blur:1").await;
    // Buckets the worker does not serve: reading from one, writing to one.
    let mut other_in = upload_job(s, "h", 5, "in.jpg", Some(jpeg(30, 30)), "thumbnail:10").await;
    e.store.put("elsewhere", "inputs/h/in.jpg", jpeg(30, 30), "image/jpeg").await.unwrap();
    other_in.input.bucket = "elsewhere".into();
    let mut other_out = upload_job(s, "h", 6, "out.jpg", Some(jpeg(30, 30)), "thumbnail:10").await;
    other_out.output.bucket = "elsewhere".into();
    let all = [good.clone(), forged.clone(), budget.clone(), slow.clone(), other_in.clone(), other_out.clone()];
    batch::enqueue(e.queue.as_ref(), &all, false).await.unwrap();
    // Sigma 1e10 in the message itself: the parser would never write it.
    let mut v: serde_json::Value = serde_json::from_str(&range.to_json()).unwrap();
    v["pipeline"]["ops"][0]["sigma"] = serde_json::json!(1e10);
    e.queue.send(&v.to_string(), &SendOptions::default()).await.unwrap();

    let mut cfg = fast_cfg();
    cfg.memory_mb = 512;
    cfg.process.job_timeout = Duration::from_millis(300);
    cfg.process.allowed_buckets = vec![BUCKET.into()];
    let (q, st) = (e.queue.clone(), e.store.clone());
    run_until(e.queue.clone(), e.store.clone(), cfg, async || {
        let c = q.counts().await.unwrap();
        c.visible + c.in_flight + c.delayed == 0
            && batch_status(st.as_ref(), BUCKET, "h").await.unwrap().results.len() == 6
    })
    .await;

    let status = batch_status(e.store.as_ref(), BUCKET, "h").await.unwrap();
    let by_id = |id: &str| status.results.iter().find(|r| r.job_id == id).unwrap();
    assert_eq!(by_id(&good.id).status, Status::Ok);
    for (job, want) in [
        (&forged.id, "input digest mismatch"),
        (&budget.id, "over the budget of 512 MB"),
        (&slow.id, "time limit"),
        (&range.id, "sigma must be <= 100"),
        (&other_in.id, "input bucket 'elsewhere' is not one this worker reads from"),
    ] {
        let r = by_id(job);
        assert_eq!(r.status, Status::Failed, "{job}");
        let reason = r.reason.as_deref().unwrap();
        assert!(reason.contains(want), "{job}: {reason}");
        assert_eq!(r.attempts, 1, "{job}: permanent, not retried");
    }
    assert!(by_id(&budget.id).reason.as_deref().unwrap().contains("16384x16384"));
    // The forged message wrote nothing under the victim's output key.
    let victim_key = keys::output_key_stem(
        "outputs/",
        &keys::output_digest(
            &keys::content_digest(&victim),
            &forged.pipeline.canonical(),
            pixq_jobs::kernel::KERNEL_VERSION,
        ),
    );
    assert!(e.store.list(BUCKET, &victim_key).await.unwrap().is_empty(), "an output was written for forged pixels");
    let dead = e.queue.dead_letters(100).await.unwrap();
    assert_eq!(dead.len(), 6);
    assert!(dead.iter().any(|d| d.reason.contains("output bucket 'elsewhere' is not one this worker writes to")));
    assert!(e.store.list("elsewhere", "results/").await.unwrap().is_empty(), "a record was written to 'elsewhere'");
    assert!(e.store.list("elsewhere", "outputs/").await.unwrap().is_empty(), "an output was written to 'elsewhere'");
}

/// Issue 8, item 6: a message whose last allowed attempt never finishes (here: its worker
/// is stopped mid-job; a crash or an OOM kill looks the same to the queue) is dead-lettered
/// by the queue, and its job has a failed record saying so; a last attempt that finishes
/// replaces the record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_last_attempt_that_never_finishes_leaves_a_failed_record() {
    let e = env(1);
    let stuck = upload_job(e.store.as_ref(), "d", 0, "stuck.jpg", Some(jpeg(64, 48)), "thumbnail:10").await;
    batch::enqueue(e.queue.as_ref(), std::slice::from_ref(&stuck), false).await.unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(Hooked { inner: (*e.store).clone(), hook: Stuck });
    let mut cfg = fast_cfg();
    cfg.grace = Duration::ZERO;
    let (q, st) = (e.queue.clone(), e.store.clone());
    run_until(e.queue.clone(), store, cfg, async || {
        q.counts().await.unwrap().in_flight == 1 && !st.list(BUCKET, "results/d/").await.unwrap().is_empty()
    })
    .await;
    // The queue buries it on the next receive (its one allowed receive is used up).
    assert!(e.queue.receive(10, Duration::from_secs(30), Duration::ZERO).await.unwrap().is_empty());
    let dead = e.queue.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    let status = batch_status(e.store.as_ref(), BUCKET, "d").await.unwrap();
    let r = &status.results[0];
    assert_eq!((r.status, r.provisional), (Status::Failed, true));
    assert!(r.reason.as_deref().unwrap().contains("attempt 1 of 1 did not finish"), "{:?}", r.reason);

    // The same situation where the attempt finishes: an ok record, not provisional.
    let fine = upload_job(e.store.as_ref(), "d2", 0, "fine.jpg", Some(jpeg(64, 48)), "thumbnail:12").await;
    batch::enqueue(e.queue.as_ref(), std::slice::from_ref(&fine), false).await.unwrap();
    let st = e.store.clone();
    run_until(e.queue.clone(), e.store.clone(), fast_cfg(), async || {
        batch_status(st.as_ref(), BUCKET, "d2").await.unwrap().ok() == 1
    })
    .await;
    let r = &batch_status(e.store.as_ref(), BUCKET, "d2").await.unwrap().results[0];
    assert_eq!((r.status, r.provisional), (Status::Ok, false));
}

/// Issue 8, item 4: dropping a job's future (the worker's grace is over, a Lambda's time is
/// up) stops its kernel. The kernel holds the only lane until it returns, so the next job
/// is admitted promptly only if the dropped job's minutes-long kernel really stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_job_stops_its_kernel_and_frees_its_lane() {
    let e = env(3);
    let ops = vec!["blur:80"; 24].join(",");
    let job = upload_job(e.store.as_ref(), "k", 0, "slow.png", Some(png(3000, 2000)), &ops).await;
    let adm = Admission::with_lanes(4096, 1);
    let (store, adm2) = (e.store.clone(), adm.clone());
    let never = CancellationToken::new();
    let running = tokio::spawn(async move {
        pixq_jobs::process::process(&job, 1, store.as_ref(), &ProcessConfig::default(), &adm2, &never).await
    });
    // Wait until its kernel holds the lane.
    let probe = CancellationToken::new();
    let t = std::time::Instant::now();
    loop {
        match tokio::time::timeout(Duration::from_millis(20), adm.admit(1, 0, &probe)).await {
            Err(_) => break, // the lane is taken: the kernel runs
            Ok(held) => drop(held),
        }
        assert!(t.elapsed() < Duration::from_secs(30), "the job never reached its kernel");
    }
    running.abort();
    assert!(running.await.unwrap_err().is_cancelled());
    let next = tokio::time::timeout(Duration::from_secs(10), adm.admit(1, 0, &probe)).await;
    assert!(next.is_ok(), "the dropped job's kernel kept its lane: it did not stop");
}

/// A job with variants: one record listing every output under its variant's name, each
/// output at its own content address; an identical job reuses them all; one missing output
/// makes the job run again; a single-output job with the same pipeline as a variant gets
/// its own key (the variant's pixels depend on the decode the variants share).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn variants_make_named_outputs_in_one_record_and_are_reused_together() {
    let e = env(5);
    let s = e.store.as_ref();
    let bytes = jpeg(1600, 1200);
    let recipe = pixq_jobs::kernel::Recipe::parse("small=thumbnail:100;large=thumbnail:600,format:webp").unwrap();
    let out = OutputLocation { bucket: BUCKET.into(), prefix: "outputs/".into() };
    let digest = Some(keys::content_digest(&bytes));
    s.put(BUCKET, "inputs/v/a.jpg", bytes.clone(), "image/jpeg").await.unwrap();
    let input = ObjectRef { bucket: BUCKET.into(), key: "inputs/v/a.jpg".into() };
    let job = batch::new_recipe_job("v1", 0, input.clone(), digest.clone(), &recipe, &out);
    assert_eq!(job.schema, 2);
    // Through the queue and the worker loop, as every runtime runs it.
    batch::enqueue(e.queue.as_ref(), std::slice::from_ref(&job), false).await.unwrap();
    let (q, st) = (e.queue.clone(), e.store.clone());
    run_until(q, st, fast_cfg(), async || batch_status(s, BUCKET, "v1").await.unwrap().ok() == 1).await;
    let r = batch_status(s, BUCKET, "v1").await.unwrap().results.remove(0);
    assert_eq!(r.pipeline, "small=thumbnail:100;large=thumbnail:600,format:webp");
    let named: Vec<_> = r
        .outputs
        .iter()
        .map(|o| (o.variant.as_deref().unwrap(), o.format, o.width.unwrap(), o.height.unwrap()))
        .collect();
    assert_eq!(named, [("small", Format::Jpeg, 100, 75), ("large", Format::Webp, 600, 450)]);
    assert_ne!(r.outputs[0].object.key, r.outputs[1].object.key);
    for o in &r.outputs {
        let b = s.get(BUCKET, &o.object.key).await.unwrap();
        assert_eq!(b.len() as u64, o.bytes);
        let img = pixq_jobs::kernel::decode(&b, &Default::default()).unwrap();
        assert_eq!((Some(img.width()), Some(img.height())), (o.width, o.height));
    }

    let cfg = ProcessConfig::default();
    let adm = Admission::new(256);
    let never = CancellationToken::new();
    let run = async |j: &Job| match pixq_jobs::process::process(j, 1, s, &cfg, &adm, &never).await {
        pixq_jobs::process::Outcome::Done(r) => r,
        o => panic!("{o:?}"),
    };
    // The same job again: both outputs reused, named.
    let again = run(&batch::new_recipe_job("v2", 0, input.clone(), digest.clone(), &recipe, &out)).await;
    assert!(again.reused);
    assert_eq!(
        again.outputs.iter().map(|o| o.object.clone()).collect::<Vec<_>>(),
        r.outputs.iter().map(|o| o.object.clone()).collect::<Vec<_>>()
    );
    assert_eq!(again.outputs[1].variant.as_deref(), Some("large"));
    // One output gone: the job runs again and writes both.
    s.delete_many(BUCKET, std::slice::from_ref(&r.outputs[1].object.key)).await.unwrap();
    let rerun = run(&batch::new_recipe_job("v3", 0, input.clone(), digest.clone(), &recipe, &out)).await;
    assert!(!rerun.reused);
    assert!(s.head(BUCKET, &r.outputs[1].object.key).await.unwrap().is_some());
    // The small variant's pipeline as a job of its own: another key.
    let alone = run(&batch::new_job("v4", 0, input, digest, &recipe.pipelines()[0].clone(), &out)).await;
    assert_ne!(alone.outputs[0].object.key, r.outputs[0].object.key);
    assert_eq!(alone.outputs[0].variant, None);
}

/// `watermark:NAME`: the mark is read from `watermarks/NAME` in the output bucket; a
/// missing one is a recorded failure naming where to put it; its bytes are part of the
/// output's key, so a new mark under the same name makes a new output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watermarks_come_from_the_store_and_their_bytes_key_the_output() {
    let e = env(5);
    let s = e.store.as_ref();
    let mark = |rgb: [u8; 3]| {
        let r = Raster::from_fn(20, 10, Channels::Rgba, |_, _, p| p.copy_from_slice(&[rgb[0], rgb[1], rgb[2], 255]));
        pixq_jobs::kernel::encode(&r, Format::Png, &OutputSpec::default()).unwrap()
    };
    let ops = "thumbnail:100,watermark:logo:northwest,format:png";
    let cfg = ProcessConfig::default();
    let adm = Admission::new(256);
    let never = CancellationToken::new();
    let job = |batch: &'static str| upload_job(s, batch, 0, "a.jpg", Some(jpeg(200, 100)), ops);

    let missing = job("w0").await;
    match pixq_jobs::process::process(&missing, 1, s, &cfg, &adm, &never).await {
        pixq_jobs::process::Outcome::Poison(why) => {
            assert!(why.contains("watermark 'logo' not found") && why.contains("watermarks/logo"), "{why}")
        }
        o => panic!("{o:?}"),
    }

    s.put(BUCKET, "watermarks/logo", mark([255, 0, 0]), "image/png").await.unwrap();
    let run = async |j: &Job| match pixq_jobs::process::process(j, 1, s, &cfg, &adm, &never).await {
        pixq_jobs::process::Outcome::Done(r) => r,
        o => panic!("{o:?}"),
    };
    let first = run(&job("w1").await).await;
    assert!(!first.reused);
    let out = s.get(BUCKET, &first.outputs[0].object.key).await.unwrap();
    let img = pixq_jobs::kernel::decode(&out, &Default::default()).unwrap();
    assert_eq!(img.pixel(5, 5), &[255, 0, 0]);
    // The same mark: reused.
    assert!(run(&job("w2").await).await.reused);
    // Another mark under the same name: another output.
    s.put(BUCKET, "watermarks/logo", mark([0, 0, 255]), "image/png").await.unwrap();
    let blue = run(&job("w3").await).await;
    assert!(!blue.reused);
    assert_ne!(blue.outputs[0].object.key, first.outputs[0].object.key);
    let img =
        pixq_jobs::kernel::decode(&s.get(BUCKET, &blue.outputs[0].object.key).await.unwrap(), &Default::default());
    assert_eq!(img.unwrap().pixel(5, 5), &[0, 0, 255]);
    // A mark over the size limit fails the job with the figures.
    s.put(BUCKET, "watermarks/logo", vec![0u8; 9 << 20], "image/png").await.unwrap();
    match pixq_jobs::process::process(&job("w4").await, 1, s, &cfg, &adm, &never).await {
        pixq_jobs::process::Outcome::Poison(why) => assert!(why.contains("over the limit"), "{why}"),
        o => panic!("{o:?}"),
    }
}

/// A filesystem store that watches the reads of large inputs (over 256 KiB): how many run
/// at once at most, and how many started before the first result record. A read waits
/// until `want` of them are in at once (or every one of the batch has started), then holds
/// a little longer, so reads a worker lets through together always overlap, however slow
/// the machine, and reads it should have held back get the chance to show. It says it is
/// on this machine's disk as told.
#[derive(Debug)]
struct Watched {
    inner: FsStore,
    local: bool,
    want: u32,
    total: u32,
    started: AtomicU32,
    now: AtomicU32,
    most: AtomicU32,
    changed: tokio::sync::Notify,
    before_first_result: AtomicU32,
    recorded: std::sync::atomic::AtomicBool,
}

impl Watched {
    fn new(inner: FsStore, local: bool, want: u32, total: u32) -> Arc<Watched> {
        Arc::new(Watched {
            inner,
            local,
            want,
            total,
            started: AtomicU32::new(0),
            now: AtomicU32::new(0),
            most: AtomicU32::new(0),
            changed: tokio::sync::Notify::new(),
            before_first_result: AtomicU32::new(0),
            recorded: Default::default(),
        })
    }

    fn saw<'a>(&self, mut keys: impl Iterator<Item = &'a str>) {
        if keys.any(|k| k.starts_with("results/")) {
            self.recorded.store(true, Ordering::SeqCst);
        }
    }
}

#[async_trait]
impl ObjectStore for Watched {
    async fn head(&self, b: &str, k: &str) -> Result<Option<ObjectMeta>, StoreError> {
        self.inner.head(b, k).await
    }
    async fn get(&self, b: &str, k: &str) -> Result<Vec<u8>, StoreError> {
        let large = self.inner.head(b, k).await?.is_some_and(|m| m.size > 256 << 10);
        if !large {
            return self.inner.get(b, k).await;
        }
        if !self.recorded.load(Ordering::SeqCst) {
            self.before_first_result.fetch_add(1, Ordering::SeqCst);
        }
        let started = self.started.fetch_add(1, Ordering::SeqCst) + 1;
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(n, Ordering::SeqCst);
        self.changed.notify_waiters();
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let all_started = started.max(self.started.load(Ordering::SeqCst)) >= self.total;
            if self.now.load(Ordering::SeqCst) >= self.want || all_started {
                break;
            }
            // Only a worker that never lets `want` reads through waits this out.
            if tokio::time::timeout(Duration::from_secs(10), changed).await.is_err() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
        let out = self.inner.get(b, k).await;
        self.now.fetch_sub(1, Ordering::SeqCst);
        out
    }
    async fn put(&self, b: &str, k: &str, body: Vec<u8>, ct: &str) -> Result<(), StoreError> {
        self.saw(std::iter::once(k));
        self.inner.put(b, k, body, ct).await
    }
    async fn put_all(&self, b: &str, objects: Vec<(String, Vec<u8>, &'static str)>) -> Result<(), StoreError> {
        self.saw(objects.iter().map(|o| o.0.as_str()));
        self.inner.put_all(b, objects).await
    }
    async fn list(&self, b: &str, p: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.inner.list(b, p).await
    }
    async fn delete(&self, b: &str, k: &str) -> Result<(), StoreError> {
        self.inner.delete(b, k).await
    }
    fn links_files(&self) -> bool {
        self.local
    }
}

/// Reading a large input from this machine's disk is CPU work (copying, hashing): a worker
/// with prefetched jobs reads at most one per lane at a time, in the order received, so
/// the first jobs' inputs are not starved by the rest. Reads from a remote store (S3) are
/// mostly waiting and all go at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_local_reads_go_one_per_lane_and_remote_ones_all_at_once() {
    // (local, lanes, reads a read waits to see at once)
    for (local, lanes, want) in [(true, 1, 1), (true, 2, 2), (false, 1, 3)] {
        let e = env(5);
        let store = Watched::new((*e.store).clone(), local, want, 6);
        let mut jobs = Vec::new();
        for i in 0..6 {
            let bytes = common::noisy_png(320, 300, i as u32);
            assert!(bytes.len() > 256 << 10, "{} bytes", bytes.len());
            jobs.push(upload_job(store.as_ref(), "r", i, &format!("{i}.png"), Some(bytes), "grayscale").await);
        }
        batch::enqueue(e.queue.as_ref(), &jobs, false).await.unwrap();
        let cfg = WorkerConfig { concurrency: lanes, prefetch: 8, ..fast_cfg() };
        let q = e.queue.clone();
        run_until(e.queue.clone(), store.clone(), cfg, async || {
            let c = q.counts().await.unwrap();
            c.visible + c.in_flight + c.delayed == 0
        })
        .await;
        assert_eq!(batch_status(store.as_ref(), BUCKET, "r").await.unwrap().ok(), 6);
        let most = store.most.load(Ordering::SeqCst);
        if local {
            assert_eq!(most, lanes as u32, "local reads at once with {lanes} lanes");
        } else {
            assert!(most >= 3, "remote reads were held back: {most} at once");
        }
    }
}

/// Inputs from this machine's disk are read shortly before their kernel, not all at once
/// when their messages arrive: with one lane, one input runs and one waits ready, so a
/// batch of 10,000 photos holds two in memory, not the 64 prefetched (and an input's buffer
/// serves the next read). Here the kernels are slow and the result records quick (no
/// fsync): ungated, all eight inputs would be read before the first record is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_holds_two_local_inputs_per_lane_not_every_prefetched_one() {
    let e = env(5);
    let store = Watched::new((*e.store).clone().with_fsync(false), true, 1, 8);
    let mut jobs = Vec::new();
    for i in 0..8 {
        let bytes = common::noisy_png(320, 300, 100 + i as u32);
        jobs.push(
            upload_job(store.as_ref(), "held", i, &format!("{i}.png"), Some(bytes), "blur:12,blur:12,blur:12").await,
        );
    }
    batch::enqueue(e.queue.as_ref(), &jobs, false).await.unwrap();
    let cfg = WorkerConfig { concurrency: 1, prefetch: 16, ..fast_cfg() };
    let q = e.queue.clone();
    run_until(e.queue.clone(), store.clone(), cfg, async || {
        let c = q.counts().await.unwrap();
        c.visible + c.in_flight + c.delayed == 0
    })
    .await;
    assert_eq!(batch_status(store.as_ref(), BUCKET, "held").await.unwrap().ok(), 8);
    let early = store.before_first_result.load(Ordering::SeqCst);
    // Two held; a third may start as the first kernel ends, a fourth as the second does
    // if the first record is slow to commit.
    assert!((1..=4).contains(&early), "{early} inputs read before the first result");
}

/// The embedded store, reporting every input as 1 KB: an input that grows after its size is
/// read (or whose metadata lies) looks small until it is read.
#[derive(Debug)]
struct SaysSmall(FsStore);

#[async_trait]
impl ObjectStore for SaysSmall {
    async fn head(&self, b: &str, k: &str) -> Result<Option<ObjectMeta>, StoreError> {
        Ok(self
            .0
            .head(b, k)
            .await?
            .map(|m| ObjectMeta { size: if k.starts_with("inputs/") { 1000 } else { m.size }, ..m }))
    }
    async fn get(&self, b: &str, k: &str) -> Result<Vec<u8>, StoreError> {
        self.0.get(b, k).await
    }
    async fn get_known(&self, b: &str, k: &str, max: u64) -> Result<(Vec<u8>, Option<String>), StoreError> {
        self.0.get_known(b, k, max).await
    }
    async fn put(&self, b: &str, k: &str, body: Vec<u8>, ct: &str) -> Result<(), StoreError> {
        self.0.put(b, k, body, ct).await
    }
    async fn put_all(&self, b: &str, objects: Vec<(String, Vec<u8>, &'static str)>) -> Result<(), StoreError> {
        self.0.put_all(b, objects).await
    }
    async fn list(&self, b: &str, p: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.0.list(b, p).await
    }
    async fn delete(&self, b: &str, k: &str) -> Result<(), StoreError> {
        self.0.delete(b, k).await
    }
}

/// An input over the size limit that the size check did not catch (it grew after its size
/// was read; its metadata lied) is refused as it is read, after little more than the limit
/// of it: here a 64 GiB file (sparse) and a 3 MB one against a 2 MB limit. Both end as
/// permanent failures; the job beside them is done; the worker does not fall over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_that_grew_past_the_limit_is_refused_as_it_is_read() {
    let e = env(3);
    let dir = tempfile::tempdir().unwrap();
    let huge = dir.path().join("huge.jpg");
    std::fs::File::create(&huge).unwrap().set_len(64 << 30).unwrap();
    let big = dir.path().join("big.png");
    std::fs::write(&big, common::noisy_png(1000, 1000, 3)).unwrap();
    assert!(std::fs::metadata(&big).unwrap().len() > 2 << 20);
    let mut jobs = Vec::new();
    for (i, (name, src)) in [("huge.jpg", &huge), ("big.png", &big)].into_iter().enumerate() {
        let key = format!("inputs/g/{name}");
        e.store.put_file(BUCKET, &key, src, "").await.unwrap();
        let input = ObjectRef { bucket: BUCKET.into(), key };
        let out = OutputLocation { bucket: BUCKET.into(), prefix: "outputs/".into() };
        jobs.push(batch::new_job("g", i, input, None, &Pipeline::parse("grayscale").unwrap(), &out));
    }
    jobs.push(upload_job(e.store.as_ref(), "g", 2, "fine.png", Some(png(64, 64)), "grayscale").await);
    batch::enqueue(e.queue.as_ref(), &jobs, false).await.unwrap();
    let mut cfg = fast_cfg();
    cfg.process.limits.max_input_bytes = 2 << 20;
    let store: Arc<dyn ObjectStore> = Arc::new(SaysSmall(FsStore::new(e._dir.path().join("store"))));
    let (q, st) = (e.queue.clone(), store.clone());
    run_until(e.queue.clone(), store.clone(), cfg, async || {
        let c = q.counts().await.unwrap();
        c.visible + c.in_flight + c.delayed == 0
            && batch_status(st.as_ref(), BUCKET, "g").await.unwrap().results.len() == 3
    })
    .await;
    let status = batch_status(store.as_ref(), BUCKET, "g").await.unwrap();
    for job in &jobs[..2] {
        let r = status.results.iter().find(|r| r.job_id == job.id).unwrap();
        assert_eq!(r.status, Status::Failed, "{}", job.id);
        assert!(r.reason.as_deref().unwrap().contains("over the limit of 2097152 bytes"), "{:?}", r.reason);
        assert_eq!(r.attempts, 1, "permanent, not retried");
    }
    assert_eq!(status.ok(), 1);
}
