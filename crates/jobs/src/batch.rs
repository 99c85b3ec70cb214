//! Client-side helpers: build and enqueue jobs, follow a batch through its result records.

use pixq_kernel::{Pipeline, Recipe};

use crate::clock::now_ms;
use crate::keys;
use crate::queue::{Queue, QueueError, SendOptions};
use crate::schema::{Job, JobResult, ObjectRef, OutputLocation, SCHEMA_VERSION, Status, VARIANTS_SCHEMA_VERSION};
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
    new_recipe_job(batch, index, input, input_digest, &Recipe::One(pipeline.clone()), output)
}

/// [`new_job`] for what a recipe makes: one pipeline, or variants from one decode.
pub fn new_recipe_job(
    batch: &str,
    index: usize,
    input: ObjectRef,
    input_digest: Option<String>,
    recipe: &Recipe,
    output: &OutputLocation,
) -> Job {
    let variants = recipe.variants().to_vec();
    Job {
        schema: if variants.is_empty() { SCHEMA_VERSION } else { VARIANTS_SCHEMA_VERSION },
        id: format!("{batch}-{index:06}"),
        batch: batch.to_string(),
        input,
        input_digest,
        pipeline: recipe.first().clone(),
        variants,
        output: output.clone(),
        submitted_at_ms: now_ms(),
        forwarded: None,
    }
}

/// Enqueues jobs in batches of 10 (the SQS batch size). On a FIFO queue the message group is
/// the batch and the de-duplication id the job id.
pub async fn enqueue(queue: &dyn Queue, jobs: &[Job], fifo: bool) -> Result<(), QueueError> {
    for chunk in jobs.chunks(queue.max_send_batch().max(1)) {
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

/// What a submitter records about a batch under `batches/<batch>.json`, so `status` knows
/// how many jobs to expect and `fetch` can name outputs after their inputs.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BatchManifest {
    /// Batch id.
    pub batch: String,
    /// Canonical pipeline.
    pub pipeline: String,
    /// When submitted, ms since the Unix epoch.
    pub created_at_ms: i64,
    /// The jobs, in submission order.
    pub jobs: Vec<ManifestEntry>,
}

/// One job of a manifest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ManifestEntry {
    /// Job id.
    pub job_id: String,
    /// The name the user knows the input by (its file path).
    pub source: String,
    /// Where the input was uploaded.
    pub input: ObjectRef,
    /// The output's file name for `--out`, assigned from the whole input list at submit
    /// (for a job with variants: the stem its variants' files share).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_name: Option<String>,
    /// For a job with variants: each variant's file name, `<stem>.<variant>.<ext>`, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variant_files: Vec<String>,
}

/// Key of a batch manifest.
pub fn manifest_key(batch: &str) -> String {
    format!("batches/{batch}.json")
}

/// Writes a batch manifest.
pub async fn write_manifest(store: &dyn ObjectStore, bucket: &str, m: &BatchManifest) -> Result<(), StoreError> {
    let body = serde_json::to_vec_pretty(m).expect("a manifest always serialises");
    store.put(bucket, &manifest_key(&m.batch), body, "application/json").await
}

/// Reads a batch manifest; `None` when the batch is unknown.
pub async fn read_manifest(
    store: &dyn ObjectStore,
    bucket: &str,
    batch: &str,
) -> Result<Option<BatchManifest>, StoreError> {
    keys::validate_id("batch id", batch)?;
    match store.get(bucket, &manifest_key(batch)).await {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| StoreError::Permanent(format!("manifest of batch {batch} is unreadable: {e}"))),
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}
