//! The `Queue` port (SQS semantics) and its backends: `sqlite` (embedded default) and `sqs`
//! (feature `aws`).

#[cfg(feature = "local")]
pub mod sqlite;
#[cfg(feature = "aws")]
pub mod sqs;

use std::time::Duration;

use async_trait::async_trait;

/// A received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Stable message id.
    pub id: String,
    /// Handle for this delivery; a later delivery of the same message gets a new one.
    pub receipt: String,
    /// Body (a job's JSON).
    pub body: String,
    /// How many times the message has been received, this delivery included.
    pub receive_count: u32,
    /// When it was sent, ms since the Unix epoch.
    pub sent_at_ms: i64,
    /// FIFO message group.
    pub group_id: Option<String>,
}

/// Options for one send.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendOptions {
    /// Hide the message for this long after sending.
    pub delay: Duration,
    /// FIFO message group: messages of one group are handed out in order, one in flight at a time.
    pub group_id: Option<String>,
    /// FIFO de-duplication id: a second send with the same id within the window is dropped.
    pub dedup_id: Option<String>,
}

/// Approximate counts, as SQS reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Ready to be received.
    pub visible: u64,
    /// Received and not yet deleted or released.
    pub in_flight: u64,
    /// Sent with a delay that has not passed.
    pub delayed: u64,
    /// In the dead-letter queue.
    pub dead: u64,
}

/// A message in the dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Original message id.
    pub id: String,
    /// Body.
    pub body: String,
    /// Why it was dead-lettered.
    pub reason: String,
    /// Receives before it died.
    pub receive_count: u32,
    /// When it died, ms since the Unix epoch.
    pub died_at_ms: i64,
}

/// Queue failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// The receipt no longer names an in-flight delivery (deleted, or redelivered).
    #[error("receipt is no longer valid (message deleted or received again)")]
    ReceiptExpired,
    /// A send was refused (too large, empty).
    #[error("message refused: {0}")]
    Refused(String),
    /// Local database failure.
    #[error("queue database: {0}")]
    #[cfg(feature = "local")]
    Db(#[from] rusqlite::Error),
    /// A failure that may pass (busy, throttled, network).
    #[error("queue temporarily unavailable: {0}")]
    Transient(String),
    /// A failure that will not pass (missing queue, permissions).
    #[error("queue error: {0}")]
    Permanent(String),
}

impl QueueError {
    /// Whether retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            QueueError::Transient(_) => true,
            #[cfg(feature = "local")]
            QueueError::Db(rusqlite::Error::SqliteFailure(e, _)) => {
                matches!(e.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            }
            _ => false,
        }
    }
}

/// Largest message body, as on SQS.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// A message queue with SQS semantics: at-least-once delivery, visibility timeout, receive
/// count, dead-letter queue after `max_receives`, optional FIFO groups and de-duplication.
#[async_trait]
pub trait Queue: Send + Sync + std::fmt::Debug {
    /// Sends one message; returns its id (the existing id for a de-duplicated FIFO send).
    async fn send(&self, body: &str, opts: &SendOptions) -> Result<String, QueueError>;
    /// Sends several messages, in order.
    async fn send_batch(&self, entries: &[(String, SendOptions)]) -> Result<Vec<String>, QueueError>;
    /// Receives up to `max` messages, hiding each for `visibility`. Waits up to `wait` for
    /// the first message and returns as soon as there is one.
    async fn receive(&self, max: usize, visibility: Duration, wait: Duration) -> Result<Vec<Message>, QueueError>;
    /// As [`Queue::receive`], but stops waiting for a first message once `stop` fires. A
    /// request already under way is never cut off (its messages would stay hidden until
    /// their visibility lapsed): this default, for queues whose wait is one request (an SQS
    /// long poll), waits it out; the embedded queue's wait is its own and ends at once.
    async fn receive_until(
        &self,
        max: usize,
        visibility: Duration,
        wait: Duration,
        stop: &tokio_util::sync::CancellationToken,
    ) -> Result<Vec<Message>, QueueError> {
        let _ = stop;
        self.receive(max, visibility, wait).await
    }
    /// Acknowledges a delivery: the message is gone.
    async fn delete(&self, receipt: &str) -> Result<(), QueueError>;
    /// Acknowledges several deliveries (SQS: DeleteMessageBatch, 10 per request).
    async fn delete_batch(&self, receipts: &[String]) -> Result<(), QueueError> {
        for r in receipts {
            self.delete(r).await?;
        }
        Ok(())
    }
    /// Hides an in-flight message for `timeout` from now (0 releases it at once).
    async fn change_visibility(&self, receipt: &str, timeout: Duration) -> Result<(), QueueError>;
    /// Releases a delivery to be retried after `delay`, recording why it failed.
    async fn retry_later(&self, receipt: &str, delay: Duration, reason: &str) -> Result<(), QueueError>;
    /// Moves a delivery to the dead-letter queue at once, with its reason.
    async fn dead_letter(&self, msg: &Message, reason: &str) -> Result<(), QueueError>;
    /// Approximate counts.
    async fn counts(&self) -> Result<Counts, QueueError>;
    /// Up to `max` dead letters, oldest first, without removing them.
    async fn dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>, QueueError>;
    /// Moves up to `max` dead letters back to the queue with a fresh receive count.
    async fn redrive(&self, max: usize) -> Result<usize, QueueError>;
    /// Receives after which a message is dead-lettered.
    fn max_receives(&self) -> u32;
    /// Most messages one `send_batch` takes (SQS: 10). The embedded queue takes many more in
    /// one transaction, so enqueueing a large batch costs one commit, not one per ten jobs.
    fn max_send_batch(&self) -> usize {
        10
    }
    /// Whether this is a FIFO queue (sends then need a message group).
    fn is_fifo(&self) -> bool;
}

/// Settings of one named queue of the embedded (SQLite) queue; several share a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueConfig {
    /// Queue name (several queues can share a file).
    pub name: String,
    /// FIFO: message groups handed out in order, de-duplication ids honoured.
    pub fifo: bool,
    /// Receives after which a message goes to the dead-letter queue.
    pub max_receives: u32,
    /// How long a de-duplication id is remembered (SQS: 5 minutes).
    pub dedup_window: Duration,
    /// How often a long poll re-checks the file for messages sent by other processes.
    pub poll_interval: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            name: "jobs".into(),
            fifo: false,
            max_receives: 5,
            dedup_window: Duration::from_secs(300),
            poll_interval: Duration::from_millis(20),
        }
    }
}
