//! Queue-overhead benchmark of the whole embedded flow (store -> queue -> worker -> store).
//!
//! `flowbench tiny [N] [CONCURRENCY]`: N distinct 64x64 PNGs through `grayscale`, reports
//! jobs/second from the first enqueue to the last result record.
//! `flowbench photos DIR [PIPELINE [CONCURRENCY]]`: every file in DIR through the pipeline
//! (default `thumbnail:1024`, one kernel lane); reports the share of wall time spent outside the
//! kernel (queue, store, scheduling), computed from the kernel's own stage timings.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pixq_jobs::batch;
use pixq_jobs::kernel::{Channels, Format, OutputSpec, Pipeline, Raster};
use pixq_jobs::keys;
use pixq_jobs::local::{LOCAL_BUCKET, LocalHome};
use pixq_jobs::queue::Queue;
use pixq_jobs::queue::sqlite::QueueConfig;
use pixq_jobs::schema::{ObjectRef, OutputLocation};
use pixq_jobs::store::ObjectStore;
use pixq_jobs::worker::{self, Event, WorkerConfig};
use tokio_util::sync::CancellationToken;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = tempfile::tempdir().expect("temp dir");
    let home = LocalHome::new(dir.path());
    // PIXQ_FSYNC=0 measures the store without fsync (atomic, crash-safe, not power-loss-safe).
    let fsync = std::env::var("PIXQ_FSYNC").map(|v| v != "0").unwrap_or(true);
    let store = Arc::new(home.store().with_fsync(fsync));
    let queue = Arc::new(home.queue(QueueConfig::default()).expect("queue"));
    let out = OutputLocation { bucket: LOCAL_BUCKET.into(), prefix: "outputs/".into() };
    let (inputs, pipeline, concurrency): (Vec<Vec<u8>>, Pipeline, usize) = match args.first().map(String::as_str) {
        Some("photos") => {
            let dir = args.get(1).expect("flowbench photos DIR [PIPELINE]");
            let mut files: Vec<_> =
                std::fs::read_dir(dir).expect("read DIR").filter_map(|e| e.ok().map(|e| e.path())).collect();
            files.sort();
            // Each photo several times, each round under its own digest so nothing is reused
            // and every job is real work (as submitted by the CLI, which hashes on upload).
            let rounds: usize = std::env::var("PIXQ_FLOW_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
            let once: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).expect("read photo")).collect();
            let inputs = (0..rounds).flat_map(|_| once.iter().cloned()).collect();
            let pipeline = Pipeline::parse(args.get(2).map(String::as_str).unwrap_or("thumbnail:1024")).unwrap();
            (inputs, pipeline, args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1))
        }
        _ => {
            let n: u32 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(3000);
            let inputs = (0..n)
                .map(|i| {
                    let r = Raster::from_fn(64, 64, Channels::Rgb, |x, y, p| {
                        p.copy_from_slice(&[(x + i) as u8, (y + i / 256) as u8, (x ^ y) as u8])
                    });
                    pixq_jobs::kernel::encode(&r, Format::Png, &OutputSpec::default()).unwrap()
                })
                .collect();
            (inputs, Pipeline::parse("grayscale").unwrap(), args.get(2).and_then(|s| s.parse().ok()).unwrap_or(2))
        }
    };
    let n = inputs.len();
    let per_round =
        n / std::env::var("PIXQ_FLOW_ROUNDS").ok().and_then(|v| v.parse::<usize>().ok()).unwrap_or(5).max(1);
    let mut jobs = Vec::with_capacity(n);
    for (i, bytes) in inputs.into_iter().enumerate() {
        let key = format!("inputs/bench/{i}");
        let digest = Some(format!("{}-{}", keys::content_digest(&bytes), i / per_round.max(1)));
        store.put(LOCAL_BUCKET, &key, bytes, "").await.unwrap();
        jobs.push(batch::new_job("bench", i, ObjectRef { bucket: LOCAL_BUCKET.into(), key }, digest, &pipeline, &out));
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    // PIXQ_FLOW_PREFETCH: jobs in hand beyond the kernel lanes (default: the worker's default;
    // 0 runs each job start to end on its lane, nothing overlaps).
    let mut cfg =
        WorkerConfig { concurrency, events: Some(tx), wait: Duration::from_millis(100), ..WorkerConfig::default() };
    if let Some(p) = std::env::var("PIXQ_FLOW_PREFETCH").ok().and_then(|v| v.parse().ok()) {
        cfg.prefetch = p;
    }
    let (lanes, prefetch) = (concurrency, cfg.prefetch);
    let start = Instant::now();
    batch::enqueue(queue.as_ref(), &jobs, false).await.unwrap();
    let enqueue_s = start.elapsed().as_secs_f64();
    let stop = CancellationToken::new();
    let q: Arc<dyn Queue> = queue.clone();
    let s: Arc<dyn ObjectStore> = store.clone();
    let h = tokio::spawn(worker::run(q, s, cfg, stop.clone()));
    let mut done = 0;
    while done < n {
        match rx.recv().await {
            Some(Event::Done { .. }) => done += 1,
            Some(Event::Failed { reason, .. }) => panic!("job failed: {reason}"),
            Some(_) => {}
            None => break,
        }
    }
    let wall = start.elapsed().as_secs_f64();
    stop.cancel();
    h.await.unwrap();
    let st = batch::batch_status(store.as_ref(), LOCAL_BUCKET, "bench").await.unwrap();
    let kernel_ms: f64 = st.results.iter().map(|r| r.timings.decode_ms + r.timings.ops_ms + r.timings.encode_ms).sum();
    let busy = kernel_ms / 1000.0 / lanes as f64;
    println!(
        "jobs={n} kernel_lanes={lanes} prefetch={prefetch} fsync={fsync} wall_s={wall:.3} jobs_per_sec={:.1} \
         (enqueue {enqueue_s:.3} s of it)",
        n as f64 / wall
    );
    let avg = |f: fn(&pixq_jobs::schema::StageTimings) -> f64| {
        st.results.iter().map(|r| f(&r.timings)).sum::<f64>() / st.results.len().max(1) as f64
    };
    println!(
        "per job ms: wall={:.2} kernel={:.2} download={:.2} upload={:.2}",
        wall * 1000.0 / n as f64,
        kernel_ms / n as f64,
        avg(|t| t.download_ms),
        avg(|t| t.upload_ms)
    );
    println!("kernel_share={:.1}% outside_kernel={:.1}%", 100.0 * busy / wall, 100.0 * (1.0 - busy / wall));
}
