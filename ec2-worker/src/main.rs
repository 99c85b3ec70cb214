//! `pixq-worker`: the long-polling worker daemon. It runs the shared worker loop against the
//! embedded default (a queue file and a store folder under `--home`) or against SQS + S3
//! (`--target aws`, e.g. on EC2 with an instance role), until SIGTERM/SIGINT or the idle
//! stop, then finishes or releases what it holds and exits 0 (or `--idle-exit-code` after an
//! idle stop).

mod config;

use clap::Parser;
use tokio_util::sync::CancellationToken;

fn main() -> anyhow::Result<std::process::ExitCode> {
    // HEIF and AVIF files are read in children of this program; a child ends here.
    pixq_jobs::isolation::init();
    let args = config::Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match args.log_format.as_str() {
        "json" => logs.json().init(),
        _ => logs.init(),
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let code = rt.block_on(async move {
        // Signals first: a SIGTERM during start-up must not kill us half-way.
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signal(shutdown.clone()));
        let built = config::build(&args).await?;
        if let Some(addr) = args.metrics_addr {
            serve_metrics(addr, built.worker.metrics.clone(), shutdown.clone()).await?;
        }
        let stats = pixq_jobs::worker::run(built.queue, built.store, built.worker, shutdown).await;
        let idle = stats.idle_stopped.load(std::sync::atomic::Ordering::Relaxed);
        anyhow::Ok(std::process::ExitCode::from(if idle { args.idle_exit_code } else { 0 }))
    });
    // Released kernels stop cooperatively within milliseconds; this bounds the wait for a
    // blocking thread stuck in a decoder call that cannot be interrupted.
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    code
}

/// Serves `/healthz` (200 while the worker runs, 503 once it is stopping) and `/metrics`.
async fn serve_metrics(
    addr: std::net::SocketAddr,
    metrics: std::sync::Arc<pixq_jobs::prom::Metrics>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    use axum::http::{StatusCode, header};
    let listener =
        tokio::net::TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("--metrics-addr {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    let stopping = shutdown.clone();
    let app = axum::Router::new()
        .route(
            "/healthz",
            axum::routing::get(move || {
                let stopping = stopping.is_cancelled();
                async move {
                    if stopping { (StatusCode::SERVICE_UNAVAILABLE, "stopping\n") } else { (StatusCode::OK, "ok\n") }
                }
            }),
        )
        .route(
            "/metrics",
            axum::routing::get(move || {
                let text = metrics.render();
                async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text) }
            }),
        );
    tracing::info!(%bound, "metrics on http://{bound}/metrics");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "metrics server stopped");
        }
    });
    Ok(())
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
