//! Serving the router over HTTP/1.1 on a socket, as `pixq serve` does, with the limits a
//! server facing other machines needs and `axum::serve` does not set: a time limit on each
//! request's headers (which also closes a kept-alive connection idle that long), on each
//! request's body (whole, or for an upload between two pieces of it), on a response the
//! client stops reading, and a cap on open connections (past it, no more are accepted until
//! one closes; the kernel's backlog holds the rest) and on those from one address (past
//! it, its next is closed at once). A client holding connections open by
//! sending slowly, or by reading too slowly (under 16 KiB a minute while a response waits)
//! or not at all, gets them closed. Behind API Gateway the gateway does this;
//! there the router runs in the function instead.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use hyper::body::{Body as HttpBody, Bytes, Frame, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::time::Sleep;

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
    /// Time for a request's whole body to arrive (uploads excepted: see `upload_idle`).
    pub body_timeout: Duration,
    /// Longest an upload's body may go without bringing 16 KiB more (the upload's own time
    /// limit, `WebConfig::upload_timeout`, bounds the whole).
    pub upload_idle: Duration,
    /// Longest a response may wait for the client to take more of it.
    pub write_stall: Duration,
    /// Open connections from one address (an IPv6 /64 counting as one) at most; past it a
    /// further one from there is closed at once. 0: no such limit.
    pub max_per_peer: usize,
    /// Whether loopback peers count against `max_per_peer` (by default they do not: a
    /// reverse proxy on this machine brings every client's connections).
    pub limit_loopback: bool,
}

impl Default for ServeLimits {
    /// 1,024 connections (64 from one address other than loopback), 30 s for headers
    /// (hyper's own default, which `axum::serve` leaves off), 30 s for a body (2 MB of JSON
    /// at most), 30 s for each 16 KiB of an upload, 60 s for a client to take 16 KiB more of
    /// a response, 10 s to finish on shutdown.
    fn default() -> ServeLimits {
        ServeLimits {
            max_connections: 1024,
            header_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            upload_idle: Duration::from_secs(30),
            write_stall: Duration::from_secs(60),
            max_per_peer: 64,
            limit_loopback: false,
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
    let router = router.layer(axum::middleware::map_request(move |req: Request| async move {
        let (parts, body) = req.into_parts();
        let (whole, idle) = if parts.uri.path().starts_with("/api/uploads/") {
            (None, Some(limits.upload_idle))
        } else {
            (Some(limits.body_timeout), None)
        };
        Request::from_parts(parts, Body::new(Timed::new(body, whole, idle)))
    }));
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let peers: Arc<std::sync::Mutex<HashMap<IpAddr, usize>>> = Arc::default();
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        // A slot first: at the cap, nothing more is accepted until a connection closes.
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => s.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, addr) = tokio::select! {
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
        // One address (or /64) holding more than its share: its next connection is closed.
        let peer = match Peer::enter(&peers, addr.ip(), &limits) {
            Ok(p) => p,
            Err(()) => {
                tracing::debug!(peer = %addr.ip(), "closed a connection past the limit for one address");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .serve_connection(
                TokioIo::new(StallLimit::new(stream, limits.write_stall)),
                TowerToHyperService::new(router.clone()),
            );
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection");
            }
            drop((slot, peer));
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open after the shutdown grace; closing them");
    }
    Ok(())
}

/// A connection counted against its peer's share (`ServeLimits::max_per_peer`); uncounted
/// when dropped.
struct Peer {
    peers: Arc<std::sync::Mutex<HashMap<IpAddr, usize>>>,
    key: Option<IpAddr>,
}

impl Peer {
    /// Counts a connection from `ip`; `Err` when its peer has its share already.
    fn enter(
        peers: &Arc<std::sync::Mutex<HashMap<IpAddr, usize>>>,
        ip: IpAddr,
        limits: &ServeLimits,
    ) -> Result<Peer, ()> {
        let key = peer_key(ip);
        if limits.max_per_peer == 0 || (key.is_loopback() && !limits.limit_loopback) {
            return Ok(Peer { peers: peers.clone(), key: None });
        }
        let mut map = peers.lock().expect("peer counts");
        let n = map.entry(key).or_insert(0);
        if *n >= limits.max_per_peer {
            return Err(());
        }
        *n += 1;
        Ok(Peer { peers: peers.clone(), key: Some(key) })
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let (Some(key), Ok(mut map)) = (self.key, self.peers.lock())
            && let Some(n) = map.get_mut(&key)
        {
            *n -= 1;
            if *n == 0 {
                map.remove(&key);
            }
        }
    }
}

/// The address a peer is counted under: an IPv4 address (mapped ones too) itself, an IPv6
/// address by its /64 (one subscriber's usual share).
fn peer_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// A deadline of [`Timed`], where one is set.
type Clock = Option<Pin<Box<Sleep>>>;

/// A request body that fails (and so ends its request) when it is not all in within
/// `whole`, or when `idle` passes without [`MIN_PROGRESS`] more bytes of it. The clocks start at the
/// handler's first read, not at the request's arrival: an upload waiting for room in the
/// upload budget has not asked for its body yet (with `Expect: 100-continue` the client has
/// not even been told to send it).
struct Timed {
    inner: Body,
    whole: Option<Duration>,
    idle: Option<Duration>,
    /// (whole, idle), started at the first read.
    clocks: Option<(Clock, Clock)>,
    /// Bytes since the idle clock last restarted.
    progress: usize,
}

/// Bytes a body must bring within each idle window (`ServeLimits::upload_idle`) to keep
/// going: 16 KiB in 30 s is about 4.4 kbit/s.
const MIN_PROGRESS: usize = 16 << 10;

impl Timed {
    fn new(inner: Body, whole: Option<Duration>, idle: Option<Duration>) -> Timed {
        Timed { inner, whole, idle, clocks: None, progress: 0 }
    }
}

impl HttpBody for Timed {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let (whole, idle) = (this.whole, this.idle);
        let (whole_clock, idle_clock) = this.clocks.get_or_insert_with(|| {
            let start = |d: Duration| Box::pin(tokio::time::sleep(d));
            (whole.map(start), idle.map(start))
        });
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                // The idle clock restarts once a window has brought `MIN_PROGRESS` bytes (or
                // the body ended): a byte every few seconds does not keep an upload, and
                // its share of the upload budget, alive.
                this.progress +=
                    frame.as_ref().and_then(|f| f.as_ref().ok()).and_then(Frame::data_ref).map_or(0, Bytes::len);
                if let (Some(d), Some(sleep)) = (idle, idle_clock.as_mut())
                    && (this.progress >= MIN_PROGRESS || frame.is_none())
                {
                    this.progress = 0;
                    sleep.as_mut().reset(tokio::time::Instant::now() + d);
                }
                Poll::Ready(frame)
            }
            Poll::Pending => {
                let late = whole_clock.as_mut().is_some_and(|s| s.as_mut().poll(cx).is_ready())
                    || idle_clock.as_mut().is_some_and(|s| s.as_mut().poll(cx).is_ready());
                if late {
                    let e =
                        std::io::Error::new(std::io::ErrorKind::TimedOut, "the request body did not arrive in time");
                    return Poll::Ready(Some(Err(axum::Error::new(e))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A connection whose writes fail once the client has kept the server waiting `limit`
/// without taking [`MIN_TAKEN`] bytes more (a reader that stopped reading, its receive
/// window shut, or one that takes a few bytes before each limit passes): the response
/// ends, the connection closes and its slot is free. The clock starts when a write first
/// has to wait and stops when the client has taken that much, or when everything written
/// is handed to the socket (a flush that completes: the response is out). Reads pass
/// through (headers and bodies have their own limits).
pub struct StallLimit<T> {
    inner: T,
    limit: Duration,
    min_taken: usize,
    stalled: Option<Pin<Box<Sleep>>>,
    /// Bytes written since the clock started.
    taken: usize,
}

/// Bytes a client must take within each stall window (`ServeLimits::write_stall`) while a
/// response waits for it: 16 KiB in 60 s is about 2.2 kbit/s.
pub const MIN_TAKEN: usize = 16 << 10;

impl<T> StallLimit<T> {
    /// `inner` with writes limited to `limit` of waiting for [`MIN_TAKEN`] bytes.
    pub fn new(inner: T, limit: Duration) -> StallLimit<T> {
        StallLimit { inner, limit, min_taken: MIN_TAKEN, stalled: None, taken: 0 }
    }

    /// The same with `bytes` instead of [`MIN_TAKEN`].
    pub fn with_min_taken(mut self, bytes: usize) -> StallLimit<T> {
        self.min_taken = bytes;
        self
    }

    /// After the inner write or flush answered `r` (`wrote` bytes, for a write): a wait
    /// starts the clock (once), a wait past the limit is an error, and enough taken (or a
    /// flush done) stops the clock.
    fn watch<R>(
        &mut self,
        r: Poll<std::io::Result<R>>,
        wrote: impl Fn(&R) -> Option<usize>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<R>> {
        match r {
            Poll::Pending => {
                let limit = self.limit;
                let clock = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                if clock.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the client took too little of the response in time",
                    )));
                }
                Poll::Pending
            }
            Poll::Ready(Ok(v)) => {
                match wrote(&v) {
                    Some(n) if self.stalled.is_some() => {
                        self.taken += n;
                        if self.taken >= self.min_taken {
                            (self.stalled, self.taken) = (None, 0);
                        }
                    }
                    Some(_) => {}
                    None => (self.stalled, self.taken) = (None, 0),
                }
                Poll::Ready(Ok(v))
            }
            err => err,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for StallLimit<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for StallLimit<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(r, |n| Some(*n), cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(r, |n| Some(*n), cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(r, |_| None, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_counted_by_address_and_ipv6_by_its_64() {
        let k = |s: &str| peer_key(s.parse().unwrap()).to_string();
        assert_eq!(k("192.0.2.7"), "192.0.2.7");
        assert_eq!(k("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(k("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::");
        assert_eq!(k("2001:db8:1:2::1"), k("2001:db8:1:2:ffff::9"));
        let limits = ServeLimits { max_per_peer: 2, ..ServeLimits::default() };
        let peers = Arc::default();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let (a, b) = (Peer::enter(&peers, ip, &limits).unwrap(), Peer::enter(&peers, ip, &limits).unwrap());
        assert!(Peer::enter(&peers, ip, &limits).is_err(), "a third from one address");
        assert!(Peer::enter(&peers, "192.0.2.8".parse().unwrap(), &limits).is_ok(), "another address");
        // Loopback is not counted unless asked.
        for _ in 0..5 {
            std::mem::forget(Peer::enter(&peers, "127.0.0.1".parse().unwrap(), &limits).unwrap());
        }
        drop(a);
        let c = Peer::enter(&peers, ip, &limits).unwrap();
        drop((b, c));
        assert!(peers.lock().unwrap().is_empty(), "counts go with their connections");
    }
}
