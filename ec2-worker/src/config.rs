//! Flags (step one) and the backends built from them (step two).

use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use clap::Parser;
use pixq_jobs::backend::ConnectArgs;
use pixq_jobs::backend::{Lane, Target};
use pixq_jobs::events::S3EventDefaults;
use pixq_jobs::kernel::Recipe;
use pixq_jobs::process::ProcessConfig;
use pixq_jobs::queue::Queue;
use pixq_jobs::queue::QueueConfig;
use pixq_jobs::schema::OutputLocation;
use pixq_jobs::settle::RetryPolicy;
use pixq_jobs::store::ObjectStore;
use pixq_jobs::worker::WorkerConfig;

/// Raw flags (with environment fallbacks).
#[derive(Debug, Parser)]
#[command(name = "pixq-worker", version, about = "pixq worker: process queued image jobs")]
pub struct Args {
    /// Where the flow runs: the same flags and variables in every pixq binary (the lane
    /// defaults to `heavy` here).
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Queue name inside the queue file (local).
    #[arg(long, env = "PIXQ_QUEUE", default_value = "jobs")]
    pub queue: String,
    /// Pipeline for S3 `ObjectCreated` notifications arriving on the queue.
    #[arg(long, env = "PIXQ_S3_EVENTS_PIPELINE")]
    pub s3_events_pipeline: Option<String>,
    /// Kernels running at once (default: number of cores).
    #[arg(long, env = "PIXQ_CONCURRENCY")]
    pub concurrency: Option<usize>,
    /// Jobs in hand beyond the running kernels: their inputs download and their outputs
    /// upload while the kernels compute (default: as many as --concurrency; 0: none).
    #[arg(long, env = "PIXQ_PREFETCH")]
    pub prefetch: Option<usize>,
    /// Visibility timeout in seconds (renewed by a heartbeat while a job runs).
    #[arg(long, env = "PIXQ_VISIBILITY_SECS", default_value_t = 60)]
    pub visibility_secs: u64,
    /// Long-poll wait per receive in seconds (SQS allows up to 20).
    #[arg(long, env = "PIXQ_WAIT_SECS", default_value_t = 1)]
    pub wait_secs: u64,
    /// Receives before a message is dead-lettered (local queue, used when it is created).
    #[arg(long, env = "PIXQ_MAX_RECEIVES", default_value_t = 5)]
    pub max_receives: u32,
    /// First retry delay in milliseconds (doubles per attempt).
    #[arg(long, env = "PIXQ_BACKOFF_MS", default_value_t = 2000)]
    pub backoff_ms: u64,
    /// Longest retry delay in milliseconds.
    #[arg(long, env = "PIXQ_BACKOFF_MAX_MS", default_value_t = 300_000)]
    pub backoff_max_ms: u64,
    /// Seconds jobs in hand may run on after SIGTERM before they are released.
    #[arg(long, env = "PIXQ_GRACE_SECS", default_value_t = 30)]
    pub grace_secs: u64,
    /// Exit after this many seconds without work.
    #[arg(long, env = "PIXQ_IDLE_STOP_SECS")]
    pub idle_stop_secs: Option<u64>,
    /// Exit status after an idle stop (0 by default; the EC2 bootstrap uses 75 to tell an
    /// idle stop, after which the instance powers off, from a stop on SIGTERM).
    #[arg(long, env = "PIXQ_IDLE_EXIT_CODE", default_value_t = 0)]
    pub idle_exit_code: u8,
    /// Memory budget of all kernels at once, MB; each job is charged its estimated peak and
    /// a job that can never fit fails with the figures (default: 3/4 of this machine's or
    /// this cgroup's memory).
    #[arg(long, env = "PIXQ_MEMORY_MB")]
    pub memory_mb: Option<u64>,
    /// Largest accepted source image, in megapixels.
    #[arg(long, env = "PIXQ_MAX_MEGAPIXELS", default_value_t = 120.0)]
    pub max_megapixels: f64,
    /// Most frames of an animation written as one (animated GIF/WebP output).
    #[arg(long, env = "PIXQ_MAX_FRAMES", default_value_t = 1_000)]
    pub max_frames: u32,
    /// Most megapixels over all the frames of an animation (frames x canvas).
    #[arg(long, env = "PIXQ_MAX_ANIMATION_MEGAPIXELS", default_value_t = 500.0)]
    pub max_animation_megapixels: f64,
    /// Buckets jobs may read and write (repeat, or comma-separated in the environment).
    /// Default: the local bucket, or on AWS --bucket / the stack's bucket when known.
    #[arg(long = "allowed-bucket", env = "PIXQ_ALLOWED_BUCKETS", value_delimiter = ',')]
    pub allowed_buckets: Vec<String>,
    /// Longest a job's kernel may run, in seconds; an overrun is a recorded permanent failure.
    #[arg(long, env = "PIXQ_JOB_TIMEOUT_SECS", default_value_t = 600)]
    pub job_timeout_secs: u64,
    /// Log format: text or json.
    #[arg(long, env = "PIXQ_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// Print one CloudWatch Embedded Metric Format line per job on stdout.
    #[arg(long, env = "PIXQ_EMF")]
    pub emf: bool,
    /// Serve `/healthz` and Prometheus `/metrics` here (e.g. 127.0.0.1:9464; port 0 picks
    /// a free one and logs it).
    #[arg(long, env = "PIXQ_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// Built objects.
pub struct Built {
    /// The queue.
    pub queue: Arc<dyn Queue>,
    /// The store.
    pub store: Arc<dyn ObjectStore>,
    /// Worker settings.
    pub worker: WorkerConfig,
}

/// Builds backends and settings from the flags.
pub async fn build(a: &Args) -> anyhow::Result<Built> {
    let runtime = if a.connect.target == Target::Aws { "ec2" } else { "local" };
    let mut worker = WorkerConfig {
        visibility: Duration::from_secs(a.visibility_secs.max(1)),
        wait: Duration::from_secs(a.wait_secs.min(20)),
        retry: RetryPolicy { base: Duration::from_millis(a.backoff_ms), max: Duration::from_millis(a.backoff_max_ms) },
        grace: Duration::from_secs(a.grace_secs),
        idle_stop: a.idle_stop_secs.map(Duration::from_secs),
        memory_mb: a.memory_mb.unwrap_or_else(pixq_jobs::process::default_memory_mb),
        process: ProcessConfig {
            limits: pixq_jobs::kernel::Limits::default()
                .max_pixels((a.max_megapixels * 1e6) as u64)
                .max_frames(a.max_frames)
                .max_animation_pixels((a.max_animation_megapixels * 1e6) as u64),
            worker_id: format!("pixq-worker-{runtime}-{}", std::process::id()),
            runtime: runtime.into(),
            emf: a.emf,
            job_timeout: Duration::from_secs(a.job_timeout_secs.max(1)),
            allowed_buckets: a.allowed_buckets.clone(),
            forward: None,
        },
        ..WorkerConfig::default()
    };
    if let Some(n) = a.concurrency {
        worker.concurrency = n.max(1);
        worker.prefetch = n.max(1);
    }
    if let Some(n) = a.prefetch {
        worker.prefetch = n;
    }
    let local_queue = QueueConfig { name: a.queue.clone(), max_receives: a.max_receives, ..QueueConfig::default() };
    let opened = pixq_jobs::backend::open(&a.connect.connect(Lane::Heavy, local_queue)?).await?;
    // Jobs name their buckets; by default they may use only this backend's bucket.
    if worker.process.allowed_buckets.is_empty()
        && let Some(b) = &opened.bucket
    {
        worker.process.allowed_buckets = vec![b.clone()];
    }
    if let Some(p) = &a.s3_events_pipeline {
        let bucket = opened.bucket.clone().ok_or_else(|| anyhow!("S3 events need --bucket (where outputs go)"))?;
        worker.s3_events = Some(s3_defaults(p, bucket)?);
    }
    Ok(Built { queue: opened.queue, store: opened.store, worker })
}

fn s3_defaults(pipeline: &str, bucket: String) -> anyhow::Result<S3EventDefaults> {
    Ok(S3EventDefaults {
        recipe: Recipe::parse(pipeline).map_err(|e| anyhow!("--s3-events-pipeline: {e}"))?,
        output: OutputLocation { bucket, prefix: "outputs/".into() },
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_readme_table_lists_every_flag_and_variable() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
        let start = readme.find("## Configuration: every flag and variable").expect("the README's configuration table");
        let table = &readme[start..];
        let cmd = super::Args::command();
        let mut n = 0;
        for a in cmd.get_arguments() {
            let (Some(env), Some(long)) = (a.get_env(), a.get_long()) else { continue };
            let env = env.to_string_lossy();
            n += 1;
            let row = table.lines().find(|l| l.contains(&format!("`{env}`")));
            let row = row.unwrap_or_else(|| panic!("README's table lacks {env}"));
            assert!(row.contains(&format!("--{long}")), "README's row of {env} does not name --{long}: {row}");
        }
        assert!(n >= 20, "{n}");
    }
}
