//! Client-side helpers: build and enqueue jobs, follow a batch through its result records.

use pixq_kernel::Pipeline;

use crate::clock::now_ms;
use crate::keys;
use crate::queue::{Queue, QueueError, SendOptions};
use crate::schema::{Job, JobResult, ObjectRef, OutputLocation, SCHEMA_VERSION, Status};
use crate::store::{ObjectStore, StoreError};

/// Builds a job for an uploaded input.
pub fn new_job(
    batch: &str,
    index: usize,
    input: ObjectRef,
    input_digest: Option<String>,
    pipeline: &Pipeline,
    output: &OutputLocation,
) -> Job {
    Job {
        schema: SCHEMA_VERSION,
        id: format!("{batch}-{index:06}"),
        batch: batch.to_string(),
        input,
        input_digest,
        pipeline: pipeline.clone(),
        output: output.clone(),
        submitted_at_ms: now_ms(),
    }
}

/// Enqueues jobs in batches of 10 (the SQS batch size). On a FIFO queue the message group is
/// the batch and the de-duplication id the job id.
pub async fn enqueue(queue: &dyn Queue, jobs: &[Job], fifo: bool) -> Result<(), QueueError> {
    for chunk in jobs.chunks(10) {
        let entries: Vec<(String, SendOptions)> = chunk
            .iter()
            .map(|j| {
                let opts = if fifo {
                    SendOptions { group_id: Some(j.batch.clone()), dedup_id: Some(j.id.clone()), ..Default::default() }
                } else {
                    SendOptions::default()
                };
                (j.to_json(), opts)
            })
            .collect();
        queue.send_batch(&entries).await?;
    }
    Ok(())
}

/// What the result records of a batch say.
#[derive(Debug, Default)]
pub struct BatchStatus {
    /// Every record found, by job id order.
    pub results: Vec<JobResult>,
    /// Records that could not be read or parsed (key, error).
    pub unreadable: Vec<(String, String)>,
}

impl BatchStatus {
    /// Jobs with an output.
    pub fn ok(&self) -> usize {
        self.results.iter().filter(|r| r.status == Status::Ok).count()
    }
    /// Jobs failed permanently.
    pub fn failed(&self) -> usize {
        self.results.iter().filter(|r| r.status == Status::Failed).count()
    }
    /// Jobs answered from an existing output.
    pub fn reused(&self) -> usize {
        self.results.iter().filter(|r| r.reused).count()
    }
}

/// Reads every result record under the batch's prefix.
pub async fn batch_status(store: &dyn ObjectStore, bucket: &str, batch: &str) -> Result<BatchStatus, StoreError> {
    keys::validate_id("batch id", batch)?;
    let mut st = BatchStatus::default();
    for m in store.list(bucket, &keys::results_prefix(batch)).await? {
        match store.get(bucket, &m.key).await {
            Ok(b) => match serde_json::from_slice::<JobResult>(&b) {
                Ok(r) => st.results.push(r),
                Err(e) => st.unreadable.push((m.key, e.to_string())),
            },
            Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    st.results.sort_by(|a, b| a.job_id.cmp(&b.job_id));
    Ok(st)
}
