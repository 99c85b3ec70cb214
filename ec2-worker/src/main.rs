//! `pixq-worker`: the long-polling worker daemon. It runs the shared worker loop against the
//! embedded default (a queue file and a store folder under `--home`) until SIGTERM/SIGINT
//! or the idle stop, then finishes or releases what it holds and exits 0.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use pixq_jobs::local::LocalHome;
use pixq_jobs::process::ProcessConfig;
use pixq_jobs::queue::sqlite::QueueConfig;
use pixq_jobs::worker::{self, WorkerConfig};
use tokio_util::sync::CancellationToken;

/// Raw flags (with environment fallbacks).
#[derive(Debug, Parser)]
#[command(name = "pixq-worker", version, about = "pixq worker: process queued image jobs")]
struct Args {
    /// Home of the embedded default (queue file + store folder).
    #[arg(long, env = "PIXQ_HOME", default_value = ".pixq")]
    home: PathBuf,
    /// Queue name inside the queue file.
    #[arg(long, env = "PIXQ_QUEUE", default_value = "jobs")]
    queue: String,
    /// Jobs processed at once (default: number of cores).
    #[arg(long, env = "PIXQ_CONCURRENCY")]
    concurrency: Option<usize>,
    /// Visibility timeout in seconds (renewed by a heartbeat while a job runs).
    #[arg(long, env = "PIXQ_VISIBILITY_SECS", default_value_t = 60)]
    visibility_secs: u64,
    /// Receives before a message is dead-lettered (only used when the queue is created).
    #[arg(long, env = "PIXQ_MAX_RECEIVES", default_value_t = 5)]
    max_receives: u32,
    /// First retry delay in milliseconds (doubles per attempt).
    #[arg(long, env = "PIXQ_BACKOFF_MS", default_value_t = 2000)]
    backoff_ms: u64,
    /// Seconds jobs in hand may run on after SIGTERM before they are released.
    #[arg(long, env = "PIXQ_GRACE_SECS", default_value_t = 30)]
    grace_secs: u64,
    /// Exit after this many seconds without work.
    #[arg(long, env = "PIXQ_IDLE_STOP_SECS")]
    idle_stop_secs: Option<u64>,
    /// Megapixels decoded at once across all jobs.
    #[arg(long, env = "PIXQ_MEGAPIXELS", default_value_t = 64)]
    megapixels: u32,
    /// Log format: text or json.
    #[arg(long, env = "PIXQ_LOG_FORMAT", default_value = "text")]
    log_format: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match args.log_format.as_str() {
        "json" => logs.json().init(),
        _ => logs.init(),
    }
    let home = LocalHome::new(&args.home);
    let queue = home
        .queue(QueueConfig { name: args.queue.clone(), max_receives: args.max_receives, ..QueueConfig::default() })
        .with_context(|| format!("opening the queue in {}", home.queue_path().display()))?;
    let mut cfg = WorkerConfig {
        visibility: Duration::from_secs(args.visibility_secs.max(1)),
        backoff_base: Duration::from_millis(args.backoff_ms),
        grace: Duration::from_secs(args.grace_secs),
        idle_stop: args.idle_stop_secs.map(Duration::from_secs),
        megapixel_budget: args.megapixels,
        process: ProcessConfig { worker_id: format!("pixq-worker-{}", std::process::id()), ..ProcessConfig::default() },
        ..WorkerConfig::default()
    };
    if let Some(n) = args.concurrency {
        cfg.concurrency = n.max(1);
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signal(shutdown.clone()));
        worker::run(std::sync::Arc::new(queue), std::sync::Arc::new(home.store()), cfg, shutdown).await;
        anyhow::Ok(())
    })
}

/// Cancels on SIGTERM (what EC2, systemd and `kill` send) or SIGINT (Ctrl-C).
async fn stop_on_signal(token: CancellationToken) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping"),
    }
    token.cancel();
}
