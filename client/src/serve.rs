//! `pixq serve`: the web front end on the backend the global flags name, with in-process
//! workers on the embedded default; and the signing key it shares with `pixq sign`.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use pixq_jobs::backend::ConnectArgs;
use pixq_jobs::backend::{Lane, Target};
use pixq_jobs::process::ProcessConfig;
use pixq_jobs::queue::QueueConfig;
use pixq_jobs::worker::{self, WorkerConfig};
use pixq_web::{App, Signer, WebConfig};
use tokio_util::sync::CancellationToken;

use crate::args::{Global, ServeArgs};

/// The signing key: given, or on the embedded default the home's `signing.key` (made on
/// first use, readable by its owner only).
pub fn signer(c: &ConnectArgs, given: Option<&str>) -> anyhow::Result<Signer> {
    if let Some(k) = given {
        return Signer::new(k.trim().as_bytes()).map_err(|e| anyhow!("--signing-key: {e}"));
    }
    if c.target != Target::Local {
        bail!("--target aws needs --signing-key (or PIXQ_SIGNING_KEY): every front end of the stack must share it");
    }
    let path = c.home.join("signing.key");
    let key = read_or_make_key(&path)?;
    Signer::new(key.as_bytes()).map_err(|e| anyhow!("{}: {e}", path.display()))
}

fn read_or_make_key(path: &Path) -> anyhow::Result<String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    match opts.open(path) {
        Ok(mut f) => {
            let key = Signer::random_key_hex();
            f.write_all(key.as_bytes())
                .and_then(|_| f.sync_all())
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            // Another process may be writing it this instant: wait for a whole key.
            for _ in 0..50 {
                let k = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
                if k.trim().len() >= pixq_web::sign::MIN_KEY_BYTES {
                    return Ok(k.trim().to_string());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            bail!("{} holds no usable key (delete it to make a new one)", path.display())
        }
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

/// Runs the server until SIGINT/SIGTERM; returns the exit code.
pub async fn serve(g: &Global, a: ServeArgs) -> anyhow::Result<i32> {
    let api_key = a.api_key.clone().filter(|k| !k.is_empty());
    if !a.bind.is_loopback() && api_key.is_none() && !a.open_writes {
        bail!(
            "--bind {} lets other machines reach the write endpoints (create, upload, start): give them an API key \
             (--api-key or PIXQ_API_KEY), or pass --open-writes to serve them without one",
            a.bind
        );
    }
    if let Some(k) = api_key.as_deref().filter(|k| !a.bind.is_loopback() && k.len() < 16) {
        bail!(
            "--api-key has {} characters; facing other machines (--bind {}) it needs at least 16, as the API function's does",
            k.len(),
            a.bind
        );
    }
    let hosts = pixq_web::guard::HostPolicy::allowing(&a.allow_hosts).map_err(|e| anyhow!(e))?;
    raise_open_files();
    let opened = pixq_jobs::backend::open(&g.connect.connect(Lane::Light, QueueConfig::default())?).await?;
    let mut config = WebConfig::new(signer(&g.connect, a.signing_key.as_deref())?);
    config.api_key = api_key;
    config.max_files = a.max_files.max(1);
    config.max_file_bytes = a.max_file_mb.max(1) << 20;
    config.presets_only = a.presets_only;
    let presets = a.presets.clone().or_else(|| Some(g.connect.home.join("presets.toml")).filter(|p| p.exists()));
    if let Some(p) = &presets {
        let text = std::fs::read_to_string(p).with_context(|| format!("reading presets {}", p.display()))?;
        config.presets = pixq_web::parse_presets(&text).map_err(|e| anyhow!("{}: {e}", p.display()))?;
    }
    if config.presets_only && config.presets.is_empty() {
        bail!("--presets-only needs presets (--presets FILE)");
    }
    let app = App::new(&opened, config)?;
    let workers = a.workers.unwrap_or(if opened.target == Target::Local { pixq_jobs::cores() } else { 0 });
    let shutdown = CancellationToken::new();
    let worker = (workers > 0).then(|| {
        let cfg = WorkerConfig {
            concurrency: workers,
            prefetch: workers,
            wait: Duration::from_millis(200),
            process: ProcessConfig {
                allowed_buckets: opened.bucket.clone().into_iter().collect(),
                ..ProcessConfig::default()
            },
            ..WorkerConfig::default()
        };
        tokio::spawn(worker::run(opened.queue.clone(), opened.store.clone(), cfg, shutdown.clone()))
    });
    let listener = tokio::net::TcpListener::bind((a.bind, a.port))
        .await
        .with_context(|| format!("listening on {}:{}", a.bind, a.port))?;
    let addr = listener.local_addr()?;
    println!(
        "pixq serve: http://{addr}/ ({} workers on {}; write endpoints {})",
        workers,
        opened.location,
        if app.has_api_key() { "need the API key" } else { "open" }
    );
    std::io::stdout().flush().ok();
    let stop = shutdown.clone();
    let limits = pixq_web::server::ServeLimits { max_per_peer: a.max_connections_per_address, ..Default::default() };
    let router = pixq_web::guard::layer(pixq_web::router(app), hosts);
    pixq_web::server::serve(listener, router, limits, async move {
        wait_for_signal().await;
        stop.cancel();
    })
    .await
    .context("serving")?;
    shutdown.cancel();
    if let Some(w) = worker {
        w.await.context("worker task")?;
    }
    Ok(0)
}

/// Most files open at once that `pixq serve` asks for: its 1,024 connections, a descriptor
/// per download being sent from a file (up to 512 within the download budget) and the
/// stores' own pass the soft limit most systems start a process with (1,024).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
const OPEN_FILES: u64 = 65_536;

/// Raises the soft limit on open files towards [`OPEN_FILES`], within the hard limit; a
/// refusal leaves it as it was.
fn raise_open_files() {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        let r = getrlimit(Resource::Nofile);
        let want = r.maximum.map_or(OPEN_FILES, |m| m.min(OPEN_FILES));
        if r.current.is_some_and(|c| c < want)
            && let Err(e) = setrlimit(Resource::Nofile, Rlimit { current: Some(want), maximum: r.maximum })
        {
            tracing::warn!(error = %e, "could not raise the limit on open files");
        }
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
