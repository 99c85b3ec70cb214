//! The worker loop: receive, process with bounded concurrency, heartbeat, ack / retry /
//! dead-letter, and shut down gracefully.
//!
//! `run(queue, store, config, shutdown)` takes its shutdown trigger as a parameter, so tests
//! and the CLI start real workers in-process and stop them at will.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::events::S3EventDefaults;
use crate::process::{Admission, ProcessConfig};
use crate::prom::Metrics;
use crate::queue::{Message, Queue};
use crate::settle::{Disposition, RetryPolicy, Settle, settle};
use crate::store::ObjectStore;

/// Worker settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Kernels running at once (default: number of cores).
    pub concurrency: usize,
    /// Jobs held beyond `concurrency`: received and downloading, or writing their outputs,
    /// while the kernels run (default: as many as `concurrency`; 0 runs each job start to end
    /// on its lane).
    pub prefetch: usize,
    /// Visibility timeout per receive; the heartbeat renews it every third of it.
    pub visibility: Duration,
    /// Long-poll wait per receive.
    pub wait: Duration,
    /// When failed attempts are tried again.
    pub retry: RetryPolicy,
    /// How long in-flight jobs may run on after shutdown before they are released.
    pub grace: Duration,
    /// Memory budget of all kernels at once, MB, charged with each job's estimated peak.
    pub memory_mb: u64,
    /// Stop after this long without receiving anything (EC2 idle stop); `None` runs on.
    pub idle_stop: Option<Duration>,
    /// Settings of the process step.
    pub process: ProcessConfig,
    /// Progress events for a front end (the CLI's progress bar).
    pub events: Option<mpsc::UnboundedSender<Event>>,
    /// How S3 `ObjectCreated` notifications on the queue become jobs (None: refused).
    pub s3_events: Option<S3EventDefaults>,
    /// Live metrics, for `pixq-worker --metrics-addr`.
    pub metrics: Arc<Metrics>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            concurrency: crate::cores(),
            prefetch: crate::cores(),
            visibility: Duration::from_secs(60),
            wait: Duration::from_secs(1),
            retry: RetryPolicy::default(),
            grace: Duration::from_secs(30),
            memory_mb: crate::process::default_memory_mb(),
            idle_stop: None,
            process: ProcessConfig::default(),
            events: None,
            s3_events: None,
            metrics: Arc::default(),
        }
    }
}

pub use crate::settle::Event;

/// Counters of one `run`.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Messages received.
    pub received: AtomicU64,
    /// Messages finished and deleted.
    pub done: AtomicU64,
    /// Messages dead-lettered.
    pub failed: AtomicU64,
    /// Messages released for retry.
    pub retried: AtomicU64,
    /// Messages released at shutdown.
    pub released: AtomicU64,
    /// The loop ended because nothing arrived for the idle-stop time.
    pub idle_stopped: std::sync::atomic::AtomicBool,
}

impl WorkerStats {
    fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
    /// A plain snapshot: (received, done, failed, retried, released).
    pub fn snapshot(&self) -> [u64; 5] {
        [&self.received, &self.done, &self.failed, &self.retried, &self.released].map(|c| c.load(Ordering::Relaxed))
    }
}

struct Shared {
    queue: Arc<dyn Queue>,
    store: Arc<dyn ObjectStore>,
    cfg: WorkerConfig,
    admission: Admission,
    stats: Arc<WorkerStats>,
    /// Fires at shutdown: jobs not yet admitted are released at once.
    shutdown: CancellationToken,
    /// Fires when the grace period is over: running jobs are released too.
    abandon: CancellationToken,
    /// Receipts of finished messages, deleted in batches by the acker.
    acks: mpsc::UnboundedSender<String>,
}

/// Runs until `shutdown` fires (or the idle stop passes), then finishes or releases what is
/// in hand and returns the counters.
pub async fn run(
    queue: Arc<dyn Queue>,
    store: Arc<dyn ObjectStore>,
    cfg: WorkerConfig,
    shutdown: CancellationToken,
) -> Arc<WorkerStats> {
    let stats = Arc::new(WorkerStats::default());
    let (acks, ack_rx) = mpsc::unbounded_channel();
    let closing = CancellationToken::new();
    let acker = tokio::spawn(acker(queue.clone(), ack_rx, closing.clone()));
    let mut admission = Admission::with_lanes(cfg.memory_mb, cfg.concurrency.max(1)).observed(cfg.metrics.clone());
    // Reading a photo from this machine's disk is CPU work: one per lane, next jobs first.
    if store.links_files() {
        admission = admission.reading_at_most(cfg.concurrency.max(1));
    }
    // Input buffers the store keeps between jobs are outside the budget: an eighth of it.
    crate::buffers::keep_at_most(usize::try_from(admission.budget_bytes() / 8).unwrap_or(usize::MAX));
    let shared = Arc::new(Shared {
        queue,
        store,
        admission,
        cfg,
        stats: stats.clone(),
        shutdown: shutdown.clone(),
        abandon: CancellationToken::new(),
        acks,
    });
    let slots = Arc::new(Semaphore::new(shared.cfg.concurrency.max(1) + shared.cfg.prefetch));
    let tracker = TaskTracker::new();
    let mut errors = 0u32;
    let mut idle_since = tokio::time::Instant::now();
    info!(concurrency = shared.cfg.concurrency, prefetch = shared.cfg.prefetch, "worker started");
    loop {
        let first = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("semaphore never closed"),
            _ = shutdown.cancelled() => break,
        };
        if shutdown.is_cancelled() {
            break;
        }
        let mut permits = vec![first];
        while permits.len() < 10 {
            match slots.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        // Receive is not raced against shutdown: a receive cut off mid-way would leave its
        // messages hidden until their visibility lapses. Its wait for a first message ends
        // with shutdown where the queue can tell a wait from a request (the embedded one).
        let msgs =
            match shared.queue.receive_until(permits.len(), shared.cfg.visibility, shared.cfg.wait, &shutdown).await {
                Ok(m) => {
                    errors = 0;
                    shared.cfg.metrics.received.fetch_add(m.len() as u64, Ordering::Relaxed);
                    m
                }
                Err(e) => {
                    errors += 1;
                    shared.cfg.metrics.receive_errors.fetch_add(1, Ordering::Relaxed);
                    let nap =
                        Duration::from_millis(100).saturating_mul(1 << errors.min(6)).min(Duration::from_secs(10));
                    warn!(error = %e, retry_in_ms = nap.as_millis() as u64, "receive failed");
                    tokio::select! {
                        _ = tokio::time::sleep(nap) => {}
                        _ = shutdown.cancelled() => break,
                    }
                    continue;
                }
            };
        if msgs.is_empty() {
            if let Some(idle) = shared.cfg.idle_stop
                && tracker.is_empty()
                && idle_since.elapsed() >= idle
            {
                info!(idle_secs = idle.as_secs(), "idle stop");
                shared.stats.idle_stopped.store(true, Ordering::Relaxed);
                break;
            }
            continue;
        }
        idle_since = tokio::time::Instant::now();
        for (msg, permit) in msgs.into_iter().zip(permits) {
            WorkerStats::bump(&shared.stats.received);
            let shared = shared.clone();
            let span = info_span!("job", message_id = %msg.id, attempt = msg.receive_count);
            tracker.spawn(
                async move {
                    handle(&shared, msg).await;
                    drop(permit);
                }
                .instrument(span),
            );
        }
    }
    // Graceful shutdown: no more receives; give running jobs the grace period, then release.
    tracker.close();
    let in_hand = tracker.len();
    if in_hand > 0 {
        info!(in_hand, grace_secs = shared.cfg.grace.as_secs(), "shutting down: finishing jobs in hand");
    }
    if tokio::time::timeout(shared.cfg.grace, tracker.wait()).await.is_err() {
        warn!("grace period over: releasing unfinished jobs");
        shared.abandon.cancel();
        tracker.wait().await;
    }
    closing.cancel();
    let _ = acker.await;
    let [received, done, failed, retried, released] = stats.snapshot();
    info!(received, done, failed, retried, released, "worker stopped");
    stats
}

/// Deletes finished messages: whatever finished while the last delete ran goes in the next
/// batch (up to 10, SQS DeleteMessageBatch; one transaction on SQLite), so a busy worker
/// acknowledges in batches and an idle one at once. Drains and returns when `closing` fires.
async fn acker(queue: Arc<dyn Queue>, mut rx: mpsc::UnboundedReceiver<String>, closing: CancellationToken) {
    loop {
        let first = tokio::select! {
            biased;
            r = rx.recv() => match r {
                Some(r) => r,
                None => return,
            },
            _ = closing.cancelled() => match rx.try_recv() {
                Ok(r) => r,
                Err(_) => return,
            },
        };
        let mut batch = vec![first];
        while batch.len() < 10 {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        if let Err(e) = queue.delete_batch(&batch).await {
            warn!(error = %e, messages = batch.len(), "delete failed; the messages will be delivered again (outputs are idempotent)");
        }
    }
}

async fn heartbeat(queue: Arc<dyn Queue>, receipt: String, visibility: Duration, stop: CancellationToken) {
    let every = (visibility / 3).max(Duration::from_millis(50));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
        match queue.change_visibility(&receipt, visibility).await {
            Ok(()) => debug!("visibility extended"),
            Err(e) => {
                // The message was received again elsewhere; our output is identical anyway.
                warn!(error = %e, "heartbeat failed");
                if !e.is_transient() {
                    return;
                }
            }
        }
    }
}

async fn handle(s: &Shared, msg: Message) {
    let stop_hb = CancellationToken::new();
    let hb = tokio::spawn(heartbeat(s.queue.clone(), msg.receipt.clone(), s.cfg.visibility, stop_hb.clone()));
    let settle_with = Settle {
        queue: s.queue.as_ref(),
        store: s.store.as_ref(),
        process: &s.cfg.process,
        admission: &s.admission,
        cancel: &s.shutdown,
        s3_events: s.cfg.s3_events.as_ref(),
        retry: s.cfg.retry,
        events: s.cfg.events.as_ref(),
        metrics: Some(&s.cfg.metrics),
        forward: None,
    };
    let disposition = tokio::select! {
        d = settle(&settle_with, &msg) => Some(d),
        _ = s.abandon.cancelled() => None,
    };
    stop_hb.cancel();
    let _ = hb.await;
    match disposition {
        Some(Disposition::Ack) => {
            if s.acks.send(msg.receipt).is_err() {
                warn!("acker gone; the message will be delivered again (output is idempotent)");
            }
            WorkerStats::bump(&s.stats.done);
        }
        Some(Disposition::Gone) => WorkerStats::bump(&s.stats.failed),
        Some(Disposition::Retry) => WorkerStats::bump(&s.stats.retried),
        None => {
            if let Err(e) = s.queue.change_visibility(&msg.receipt, Duration::ZERO).await {
                warn!(error = %e, "release failed; visibility will lapse instead");
            }
            WorkerStats::bump(&s.stats.released);
            s.cfg.metrics.job(crate::prom::Outcome::Released);
        }
    }
}
