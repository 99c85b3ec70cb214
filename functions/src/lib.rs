//! pixq's Lambda functions. `pixq-api` is the web front end (the `pixq-web` router under
//! `lambda_http`, configured by [`ApiConfig`]). `pixq-process` is the SQS-triggered processor: the handler maps
//! the SQS event to queue messages, lets `pixq_jobs::records::handle_batch` settle each one,
//! and answers with the failed message ids only (`ReportBatchItemFailures`).

mod api_config;
mod config;

pub use api_config::ApiConfig;
pub use config::{Config, ConfigError};

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use lambda_runtime::LambdaEvent;
use pixq_jobs::queue::{Message, Queue};
use pixq_jobs::records::{BatchConfig, handle_batch};
use pixq_jobs::store::ObjectStore;

/// What the handler holds across invocations: clients built once in `main`.
#[derive(Debug, Clone)]
pub struct Processor {
    /// The queue the records come from (dead-lettering, backoff).
    pub queue: Arc<dyn Queue>,
    /// Input and output objects.
    pub store: Arc<dyn ObjectStore>,
    /// Batch settings.
    pub config: Arc<BatchConfig>,
    /// Time budget when the runtime gives no deadline (local emulators may not).
    pub fallback_budget: Duration,
}

fn to_message(m: SqsMessage) -> Option<Message> {
    let attr = |k: &str| m.attributes.get(k).cloned();
    Some(Message {
        receive_count: attr("ApproximateReceiveCount").and_then(|v| v.parse().ok()).unwrap_or(1),
        sent_at_ms: attr("SentTimestamp").and_then(|v| v.parse().ok()).unwrap_or(0),
        group_id: attr("MessageGroupId"),
        id: m.message_id?,
        receipt: m.receipt_handle.unwrap_or_default(),
        body: m.body.unwrap_or_default(),
    })
}

/// The SQS handler: a plain async fn, called by the runtime and directly by tests.
pub async fn handle(p: &Processor, event: LambdaEvent<SqsEvent>) -> Result<SqsBatchResponse, lambda_runtime::Error> {
    // The context's deadline is ms since the epoch; turn it into a monotonic instant.
    // Local emulators may send 0 or a small relative number (cargo lambda watch sends
    // 600000); anything before 2001 is not an epoch deadline, so the fallback budget applies.
    let left_ms = match event.context.deadline {
        d if d < 1_000_000_000_000 => p.fallback_budget.as_millis() as u64,
        d => (d as i64 - pixq_jobs::clock::now_ms()).max(0) as u64,
    };
    let deadline = tokio::time::Instant::now() + Duration::from_millis(left_ms);
    let records: Vec<Message> = event.payload.records.into_iter().filter_map(to_message).collect();
    let n = records.len();
    tracing::info!(records = n, ms_left = left_ms, "batch received");
    let failed = handle_batch(records, deadline, p.queue.clone(), p.store.clone(), p.config.clone()).await;
    tracing::info!(records = n, failed = failed.len(), "batch done");
    let mut resp = SqsBatchResponse::default();
    for id in failed {
        resp.add_failure(id);
    }
    Ok(resp)
}
