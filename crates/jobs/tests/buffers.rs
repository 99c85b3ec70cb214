//! A worker keeps its inputs' buffers for the next read only when its store reads into them
//! (the embedded store on this disk). An S3 body kept on a Lambda would hold memory the
//! kernels are budgeted to use, and no read would ever take it back. In a file of its own:
//! the kept buffers are the process's.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pixq_jobs::batch::{self, batch_status};
use pixq_jobs::kernel::Pipeline;
use pixq_jobs::queue::sqlite::{QueueConfig, SqliteQueue};
use pixq_jobs::schema::{ObjectRef, OutputLocation};
use pixq_jobs::store::fs::FsStore;
use pixq_jobs::store::{ObjectMeta, ObjectStore, StoreError};
use pixq_jobs::worker::WorkerConfig;

mod common;

/// The embedded store, saying it is remote (as S3 does).
#[derive(Debug)]
struct Remote(FsStore);

#[async_trait]
impl ObjectStore for Remote {
    async fn head(&self, b: &str, k: &str) -> Result<Option<ObjectMeta>, StoreError> {
        self.0.head(b, k).await
    }
    async fn get(&self, b: &str, k: &str) -> Result<Vec<u8>, StoreError> {
        self.0.get(b, k).await
    }
    async fn put(&self, b: &str, k: &str, body: Vec<u8>, ct: &str) -> Result<(), StoreError> {
        self.0.put(b, k, body, ct).await
    }
    async fn list(&self, b: &str, p: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.0.list(b, p).await
    }
    async fn delete(&self, b: &str, k: &str) -> Result<(), StoreError> {
        self.0.delete(b, k).await
    }
}

async fn run(
    store: Arc<dyn ObjectStore>,
    fs: &FsStore,
    dir: &std::path::Path,
    batch_id: &str,
    seed: u32,
    memory_mb: u64,
) {
    let queue = Arc::new(SqliteQueue::open(&dir.join(format!("{batch_id}.db")), QueueConfig::default()).unwrap());
    let out = OutputLocation { bucket: "pixq".into(), prefix: "outputs/".into() };
    let mut jobs = Vec::new();
    for i in 0..3u32 {
        let bytes = common::noisy_png(800, 600, seed + i);
        assert!(bytes.len() > 1 << 20, "{} bytes", bytes.len());
        let key = format!("inputs/{batch_id}/{i}.png");
        let digest = Some(pixq_jobs::keys::content_digest(&bytes));
        fs.put("pixq", &key, bytes, "image/png").await.unwrap();
        let input = ObjectRef { bucket: "pixq".into(), key };
        jobs.push(batch::new_job(batch_id, i as usize, input, digest, &Pipeline::parse("grayscale").unwrap(), &out));
    }
    batch::enqueue(queue.as_ref(), &jobs, false).await.unwrap();
    let cfg = WorkerConfig {
        concurrency: 1,
        prefetch: 4,
        wait: Duration::from_millis(20),
        memory_mb,
        ..WorkerConfig::default()
    };
    common::drain(queue.clone(), store.clone(), cfg).await;
    let st = batch_status(store.as_ref(), "pixq", batch_id).await.unwrap();
    assert_eq!(st.ok(), 3, "{:?}", st.results.iter().map(|r| r.reason.clone()).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_buffers_are_kept_only_for_a_store_that_reads_into_them() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FsStore::new(dir.path().join("store"));
    run(Arc::new(Remote(fs.clone())), &fs, dir.path(), "remote", 1, 1024).await;
    assert_eq!(pixq_jobs::buffers::kept_bytes(), 0, "a remote store's bodies were kept");
    // Other inputs: the same ones would be answered from the first run's outputs.
    run(Arc::new(fs.clone()), &fs, dir.path(), "local", 100, 64).await;
    let kept = pixq_jobs::buffers::kept_bytes();
    assert!(kept > 1 << 20, "the local store's buffers were not kept");
    // That worker's budget, 64 MB, capped the kept buffers at 8 MB (96 MB otherwise): a
    // 9 MB buffer handed back is not kept.
    assert!(kept <= 8 << 20, "{kept} bytes kept, over an eighth of the budget");
    pixq_jobs::buffers::give_back(Vec::with_capacity(9 << 20));
    assert_eq!(pixq_jobs::buffers::kept_bytes(), kept, "a buffer over an eighth of the budget was kept");
}

/// A photo the store read ahead (as `pixq process` reads its first input) is processed from
/// those bytes, under the digest the worker would have computed: the same photo linked and
/// read as usual in a later batch is answered from the first one's output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_read_ahead_is_processed_under_its_own_digest() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FsStore::new(dir.path().join("store"));
    let src = dir.path().join("photo.png");
    std::fs::write(&src, common::noisy_png(400, 300, 7)).unwrap();
    let out = OutputLocation { bucket: "pixq".into(), prefix: "outputs/".into() };
    let pipeline = Pipeline::parse("grayscale").unwrap();
    for (batch_id, ahead) in [("ahead", true), ("plain", false)] {
        let key = format!("inputs/{batch_id}/0.png");
        if ahead {
            assert!(fs.read_ahead("pixq", &key, &src).await);
        }
        fs.put_files("pixq", vec![(key.clone(), src.clone())], "image/png").await.unwrap();
        let queue =
            Arc::new(SqliteQueue::open(&dir.path().join(format!("{batch_id}.db")), QueueConfig::default()).unwrap());
        let job = batch::new_job(batch_id, 0, ObjectRef { bucket: "pixq".into(), key }, None, &pipeline, &out);
        batch::enqueue(queue.as_ref(), &[job], false).await.unwrap();
        let cfg = WorkerConfig { concurrency: 1, wait: Duration::from_millis(20), ..WorkerConfig::default() };
        common::drain(queue, Arc::new(fs.clone()), cfg).await;
        let st = batch_status(&fs, "pixq", batch_id).await.unwrap();
        assert_eq!(st.ok(), 1, "{batch_id}");
        assert_eq!(st.reused(), usize::from(!ahead), "{batch_id}: the output was not found under the same digest");
    }
    // Taken by the first batch's read: nothing is left waiting.
    assert!(fs.get_known("pixq", "inputs/ahead/0.png", u64::MAX).await.unwrap().1.is_none());
}
