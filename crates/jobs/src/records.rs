//! Batches handed over by an event source (the SQS trigger of a function): every record is
//! settled on its own task, with bounded concurrency and an overall deadline, and the caller
//! gets back only the message ids that must be retried (partial batch failure). A record
//! that panics or cannot finish before the deadline fails alone; poison is dead-lettered
//! with its reason and reported as done, so the event source deletes it. Records cut off by
//! the deadline are dropped, which stops their kernels (see `process`), and retried: a job
//! is a permanent failure only when it overruns its own time limit (on Lambda, set from the
//! function's timeout), not because its batch ran out of time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info_span, warn};

use crate::events::S3EventDefaults;
use crate::process::{Admission, ProcessConfig};
use crate::queue::{Message, Queue};
use crate::settle::{Disposition, RetryPolicy, Settle, settle};
use crate::store::ObjectStore;

/// Settings for batch handling.
#[derive(Debug, Clone)]
pub struct BatchConfig {
    /// Kernels running at once; twice as many records are in hand, so downloads and uploads
    /// overlap the kernels.
    pub concurrency: usize,
    /// Stop this long before the deadline: unfinished records are reported failed.
    pub margin: Duration,
    /// Memory budget of all kernels at once, MB (on Lambda: from the function's memory size).
    pub memory_mb: u64,
    /// When failed records are tried again (set on the message's visibility).
    pub retry: RetryPolicy,
    /// Process settings.
    pub process: ProcessConfig,
    /// How S3 notifications become jobs.
    pub s3_events: Option<S3EventDefaults>,
    /// The heavy queue, for jobs that do not fit the function (`process.forward`).
    pub forward_queue: Option<Arc<dyn Queue>>,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            concurrency: crate::cores(),
            margin: Duration::from_secs(2),
            memory_mb: crate::process::default_memory_mb(),
            retry: RetryPolicy::default(),
            process: ProcessConfig::default(),
            s3_events: None,
            forward_queue: None,
        }
    }
}

/// Settles every record; returns the ids of the messages to report as failed.
pub async fn handle_batch(
    records: Vec<Message>,
    deadline: tokio::time::Instant,
    queue: Arc<dyn Queue>,
    store: Arc<dyn ObjectStore>,
    cfg: Arc<BatchConfig>,
) -> Vec<String> {
    let cutoff = deadline.checked_sub(cfg.margin).unwrap_or(deadline);
    let admission = Admission::with_lanes(cfg.memory_mb, cfg.concurrency.max(1));
    let cancel = CancellationToken::new();
    let slots = Arc::new(Semaphore::new(cfg.concurrency.max(1) * 2));
    let mut tasks = JoinSet::new();
    let mut pending: HashMap<tokio::task::Id, String> = HashMap::new();
    for msg in records {
        let (queue, store, cfg, admission, cancel, slots) =
            (queue.clone(), store.clone(), cfg.clone(), admission.clone(), cancel.clone(), slots.clone());
        let id = msg.id.clone();
        let span = info_span!("record", message_id = %msg.id, attempt = msg.receive_count);
        let handle = tasks.spawn(
            async move {
                let _slot = slots.acquire_owned().await.expect("semaphore never closed");
                let s = Settle {
                    queue: queue.as_ref(),
                    store: store.as_ref(),
                    process: &cfg.process,
                    admission: &admission,
                    cancel: &cancel,
                    s3_events: cfg.s3_events.as_ref(),
                    retry: cfg.retry,
                    events: None,
                    metrics: None,
                    forward: cfg.forward_queue.as_deref(),
                };
                settle(&s, &msg).await
            }
            .instrument(span),
        );
        pending.insert(handle.id(), id);
    }
    let mut failed = Vec::new();
    loop {
        match tokio::time::timeout_at(cutoff, tasks.join_next_with_id()).await {
            Ok(Some(Ok((tid, disposition)))) => {
                let id = pending.remove(&tid).unwrap_or_default();
                if disposition == Disposition::Retry {
                    failed.push(id);
                }
            }
            Ok(Some(Err(e))) => {
                let id = pending.remove(&e.id()).unwrap_or_default();
                warn!(message_id = %id, error = %e, "record task failed (panic?); reporting it for retry");
                failed.push(id);
            }
            Ok(None) => break,
            Err(_) => {
                warn!(unfinished = pending.len(), "time budget spent; reporting unfinished records for retry");
                cancel.cancel();
                tasks.abort_all();
                failed.extend(pending.drain().map(|(_, id)| id));
                break;
            }
        }
    }
    failed.sort();
    failed
}
