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

use crate::process::{Admission, Outcome, ProcessConfig, process, record_failure};
use crate::queue::{Message, Queue};
use crate::schema::Job;
use crate::store::ObjectStore;

/// Worker settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Jobs processed at once (default: number of cores).
    pub concurrency: usize,
    /// Visibility timeout per receive; the heartbeat renews it every third of it.
    pub visibility: Duration,
    /// Long-poll wait per receive.
    pub wait: Duration,
    /// First retry delay; doubles per attempt.
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// How long in-flight jobs may run on after shutdown before they are released.
    pub grace: Duration,
    /// Megapixels decoded at once across all jobs.
    pub megapixel_budget: u32,
    /// Stop after this long without receiving anything (EC2 idle stop); `None` runs on.
    pub idle_stop: Option<Duration>,
    /// Settings of the process step.
    pub process: ProcessConfig,
    /// Progress events for a front end (the CLI's progress bar).
    pub events: Option<mpsc::UnboundedSender<Event>>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            concurrency: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
            visibility: Duration::from_secs(60),
            wait: Duration::from_secs(1),
            backoff_base: Duration::from_secs(2),
            backoff_max: Duration::from_secs(300),
            grace: Duration::from_secs(30),
            megapixel_budget: 64,
            idle_stop: None,
            process: ProcessConfig::default(),
            events: None,
        }
    }
}

/// What happened to one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Output written (or reused).
    Done {
        /// Job id.
        job: String,
        /// Batch id.
        batch: String,
        /// Answered from an existing output.
        reused: bool,
    },
    /// Dead-lettered with a failed result record.
    Failed {
        /// Job id, if the message was a job at all.
        job: Option<String>,
        /// Batch id, if known.
        batch: Option<String>,
        /// Why.
        reason: String,
    },
    /// Released for a later attempt.
    Retrying {
        /// Job id.
        job: String,
        /// Why.
        reason: String,
    },
}

/// Counters of one `run`.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Messages received.
    pub received: AtomicU64,
    /// Jobs finished with an output.
    pub done: AtomicU64,
    /// ... of which answered from an existing output.
    pub reused: AtomicU64,
    /// Messages dead-lettered.
    pub failed: AtomicU64,
    /// Messages released for retry.
    pub retried: AtomicU64,
    /// Messages released at shutdown.
    pub released: AtomicU64,
}

impl WorkerStats {
    fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
    /// A plain snapshot: (received, done, reused, failed, retried, released).
    pub fn snapshot(&self) -> [u64; 6] {
        [&self.received, &self.done, &self.reused, &self.failed, &self.retried, &self.released]
            .map(|c| c.load(Ordering::Relaxed))
    }
}

/// Retry delay for the given receive count: base * 2^(n-1), capped.
pub fn backoff(cfg: &WorkerConfig, receive_count: u32) -> Duration {
    let factor = 1u32 << receive_count.saturating_sub(1).min(20);
    cfg.backoff_base.saturating_mul(factor).min(cfg.backoff_max)
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
}

impl Shared {
    fn emit(&self, e: Event) {
        if let Some(tx) = &self.cfg.events {
            let _ = tx.send(e);
        }
    }
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
    let shared = Arc::new(Shared {
        queue,
        store,
        admission: Admission::new(cfg.megapixel_budget),
        cfg,
        stats: stats.clone(),
        shutdown: shutdown.clone(),
        abandon: CancellationToken::new(),
    });
    let slots = Arc::new(Semaphore::new(shared.cfg.concurrency.max(1)));
    let tracker = TaskTracker::new();
    let mut errors = 0u32;
    let mut idle_since = tokio::time::Instant::now();
    info!(concurrency = shared.cfg.concurrency, "worker started");
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
        // messages hidden until their visibility lapses. The wait is short instead.
        let msgs = match shared.queue.receive(permits.len(), shared.cfg.visibility, shared.cfg.wait).await {
            Ok(m) => {
                errors = 0;
                m
            }
            Err(e) => {
                errors += 1;
                let nap = Duration::from_millis(100).saturating_mul(1 << errors.min(6)).min(Duration::from_secs(10));
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
    let [received, done, reused, failed, retried, released] = stats.snapshot();
    info!(received, done, reused, failed, retried, released, "worker stopped");
    stats
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
    let q = &s.queue;
    let job = match Job::from_json(&msg.body) {
        Ok(j) => j,
        Err(e) => {
            let reason = format!("bad message: {e}");
            warn!(%reason, "dead-lettering");
            if let Err(e) = q.dead_letter(&msg, &reason).await {
                warn!(error = %e, "dead-letter failed; the message will come back");
            }
            WorkerStats::bump(&s.stats.failed);
            s.emit(Event::Failed { job: None, batch: None, reason });
            return;
        }
    };
    let span = info_span!("process", job_id = %job.id, batch = %job.batch);
    let _e = span.enter();
    drop(_e);

    let stop_hb = CancellationToken::new();
    let hb = tokio::spawn(heartbeat(q.clone(), msg.receipt.clone(), s.cfg.visibility, stop_hb.clone()));
    let outcome = tokio::select! {
        o = process(&job, msg.receive_count, s.store.as_ref(), &s.cfg.process, &s.admission, &s.shutdown) => o,
        _ = s.abandon.cancelled() => Outcome::Released,
    };
    stop_hb.cancel();
    let _ = hb.await;

    let outcome = match outcome {
        Outcome::Retry(reason) if msg.receive_count >= q.max_receives() => {
            record_failure(
                s.store.as_ref(),
                &job,
                &s.cfg.process,
                msg.receive_count,
                format!("gave up after {} attempts: {reason}", msg.receive_count),
            )
            .await
        }
        o => o,
    };
    match outcome {
        Outcome::Done(r) => {
            let t = &r.timings;
            info!(
                job_id = %job.id, reused = r.reused, queue_wait_ms = t.queue_wait_ms, download_ms = t.download_ms,
                decode_ms = t.decode_ms, ops_ms = t.ops_ms, encode_ms = t.encode_ms, upload_ms = t.upload_ms, "done"
            );
            if let Err(e) = q.delete(&msg.receipt).await {
                warn!(job_id = %job.id, error = %e, "delete failed; the job will be delivered again (output is idempotent)");
            }
            WorkerStats::bump(&s.stats.done);
            if r.reused {
                WorkerStats::bump(&s.stats.reused);
            }
            s.emit(Event::Done { job: job.id, batch: job.batch, reused: r.reused });
        }
        Outcome::Poison(reason) => {
            warn!(job_id = %job.id, %reason, "failed permanently; dead-lettering");
            if let Err(e) = q.dead_letter(&msg, &reason).await {
                warn!(job_id = %job.id, error = %e, "dead-letter failed; the message will come back");
            }
            WorkerStats::bump(&s.stats.failed);
            s.emit(Event::Failed { job: Some(job.id), batch: Some(job.batch), reason });
        }
        Outcome::Retry(reason) => {
            let delay = backoff(&s.cfg, msg.receive_count);
            warn!(job_id = %job.id, %reason, retry_in_ms = delay.as_millis() as u64, "will retry");
            if let Err(e) = q.retry_later(&msg.receipt, delay, &reason).await {
                warn!(job_id = %job.id, error = %e, "release failed; visibility will lapse instead");
            }
            WorkerStats::bump(&s.stats.retried);
            s.emit(Event::Retrying { job: job.id, reason });
        }
        Outcome::Released => {
            if let Err(e) = q.change_visibility(&msg.receipt, Duration::ZERO).await {
                warn!(job_id = %job.id, error = %e, "release failed; visibility will lapse instead");
            }
            WorkerStats::bump(&s.stats.released);
        }
    }
}
