//! Serving the router over HTTP/1.1 on a socket, as `pixq serve` does, with the limits a
//! server facing other machines needs and `axum::serve` does not set: a time limit on each
//! request's headers (which also closes a kept-alive connection idle that long) and a cap on
//! open connections (past it, no more are accepted until one closes; the kernel's backlog
//! holds the rest). Behind API Gateway the gateway does this; there the router runs in the
//! function instead.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

/// Connection limits of [`serve`].
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// Open connections at most.
    pub max_connections: usize,
    /// Time for a request's headers to arrive, from when the server waits for them (also
    /// the longest a kept-alive connection stays idle).
    pub header_timeout: Duration,
    /// Time open connections get to finish after shutdown is asked for.
    pub shutdown_grace: Duration,
}

impl Default for ServeLimits {
    /// 1,024 connections, 30 s for headers (hyper's own default, which `axum::serve` leaves
    /// off), 10 s to finish on shutdown.
    fn default() -> ServeLimits {
        ServeLimits {
            max_connections: 1024,
            header_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then lets open connections
/// finish their requests for up to `limits.shutdown_grace`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        // A slot first: at the cap, nothing more is accepted until a connection closes.
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => s.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, _) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: pass, without spinning.
                    tracing::warn!(error = %e, "accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(router.clone()));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open after the shutdown grace; closing them");
    }
    Ok(())
}
