//! Event-source batches (what the Lambda hands over): a record whose processing panics fails
//! alone, and its neighbours finish.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pixq_jobs::batch;
use pixq_jobs::kernel::{Channels, Format, OutputSpec, Pipeline, Raster};
use pixq_jobs::queue::Queue;
use pixq_jobs::queue::sqlite::{QueueConfig, SqliteQueue};
use pixq_jobs::records::{BatchConfig, handle_batch};
use pixq_jobs::schema::{ObjectRef, OutputLocation, Status};
use pixq_jobs::store::fs::FsStore;
use pixq_jobs::store::{ObjectMeta, ObjectStore, StoreError};

/// A filesystem store whose `get` panics for one key: a bug somewhere below a record.
#[derive(Debug)]
struct PanicsOn {
    inner: FsStore,
    key: &'static str,
}

#[async_trait]
impl ObjectStore for PanicsOn {
    async fn head(&self, b: &str, k: &str) -> Result<Option<ObjectMeta>, StoreError> {
        self.inner.head(b, k).await
    }
    async fn get(&self, b: &str, k: &str) -> Result<Vec<u8>, StoreError> {
        assert!(k != self.key, "injected panic while reading {k}");
        self.inner.get(b, k).await
    }
    async fn put(&self, b: &str, k: &str, body: Vec<u8>, ct: &str) -> Result<(), StoreError> {
        self.inner.put(b, k, body, ct).await
    }
    async fn list(&self, b: &str, p: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.inner.list(b, p).await
    }
    async fn delete(&self, b: &str, k: &str) -> Result<(), StoreError> {
        self.inner.delete(b, k).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_record_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(PanicsOn { inner: FsStore::new(dir.path().join("store")), key: "inputs/p/boom.png" });
    let queue = Arc::new(SqliteQueue::open(&dir.path().join("q.db"), QueueConfig::default()).unwrap());
    let out = OutputLocation { bucket: "pixq".into(), prefix: "outputs/".into() };
    let mut jobs = Vec::new();
    for (i, name) in ["a.png", "boom.png", "b.png"].iter().enumerate() {
        let img = Raster::from_fn(40, 30, Channels::Rgb, |x, y, p| {
            p.copy_from_slice(&[x as u8 * 6, y as u8 * 8, i as u8 * 90])
        });
        let bytes = pixq_jobs::kernel::encode(&img, Format::Png, &OutputSpec::default()).unwrap();
        let key = format!("inputs/p/{name}");
        store.put("pixq", &key, bytes, "image/png").await.unwrap();
        let input = ObjectRef { bucket: "pixq".into(), key };
        jobs.push(batch::new_job("p", i, input, None, &Pipeline::parse("invert").unwrap(), &out));
    }
    batch::enqueue(queue.as_ref(), &jobs, false).await.unwrap();
    let msgs = queue.receive(10, Duration::from_secs(60), Duration::ZERO).await.unwrap();
    assert_eq!(msgs.len(), 3);
    let boom_id = msgs.iter().find(|m| m.body.contains("boom.png")).unwrap().id.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let failed = handle_batch(msgs, deadline, queue.clone(), store.clone(), Arc::new(BatchConfig::default())).await;
    assert_eq!(failed, vec![boom_id], "only the panicking record may fail");
    let st = batch::batch_status(store.as_ref(), "pixq", "p").await.unwrap();
    assert_eq!(st.results.iter().filter(|r| r.status == Status::Ok).count(), 2);
    assert!(st.results.iter().all(|r| !r.input.key.ends_with("boom.png")), "the panicking record left no record");
}
