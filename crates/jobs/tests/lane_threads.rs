//! Kernels of a one-lane worker all run on one thread, so its warm decoder state and freed
//! image buffers serve the next image. A job hands its admission back only with the
//! kernel's answer, which the lane delivers once it is idle again; released any earlier,
//! the next job found no idle lane and started a second thread, every other image paying
//! for fresh pages. In a file of its own: the lane threads are the process's, and this
//! counts them.

#![cfg(target_os = "linux")]

use std::sync::Arc;
use std::time::Duration;

use pixq_jobs::batch::{self, batch_status};
use pixq_jobs::kernel::{Channels, Format, OutputSpec, Pipeline, Raster};
use pixq_jobs::queue::sqlite::{QueueConfig, SqliteQueue};
use pixq_jobs::schema::{ObjectRef, OutputLocation};
use pixq_jobs::store::ObjectStore;
use pixq_jobs::store::fs::FsStore;
use pixq_jobs::worker::WorkerConfig;

mod common;

fn kernel_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter(|t| {
            let comm = t.as_ref().map(|t| std::fs::read_to_string(t.path().join("comm")).unwrap_or_default());
            comm.is_ok_and(|c| c.trim() == "pixq-kernel")
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_lane_worker_runs_every_kernel_on_one_thread() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FsStore::new(dir.path().join("store")));
    let queue = Arc::new(SqliteQueue::open(&dir.path().join("q.db"), QueueConfig::default()).unwrap());
    let out = OutputLocation { bucket: "pixq".into(), prefix: "outputs/".into() };
    let mut jobs = Vec::new();
    for i in 0..16u32 {
        // Over 256 x 256 pixels, so each kernel goes to a lane thread.
        let img = Raster::from_fn(400 + i, 300, Channels::Rgb, |x, y, p| {
            p.copy_from_slice(&[(x % 256) as u8, (y % 256) as u8, ((x + y + i) % 256) as u8])
        });
        let bytes = pixq_jobs::kernel::encode(&img, Format::Jpeg, &OutputSpec::default()).unwrap();
        let key = format!("inputs/t/{i}.jpg");
        let digest = Some(pixq_jobs::keys::content_digest(&bytes));
        store.put("pixq", &key, bytes, "image/jpeg").await.unwrap();
        let input = ObjectRef { bucket: "pixq".into(), key };
        jobs.push(batch::new_job("t", i as usize, input, digest, &Pipeline::parse("thumbnail:200").unwrap(), &out));
    }
    batch::enqueue(queue.as_ref(), &jobs, false).await.unwrap();
    let cfg = WorkerConfig { concurrency: 1, prefetch: 16, wait: Duration::from_millis(20), ..WorkerConfig::default() };
    common::drain(queue.clone(), store.clone(), cfg).await;
    assert_eq!(batch_status(store.as_ref() as &dyn ObjectStore, "pixq", "t").await.unwrap().ok(), 16);
    assert_eq!(kernel_threads(), 1, "16 kernels, one at a time, on more than one thread");
}
