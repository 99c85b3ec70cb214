//! `pixq serve`'s socket, as a hostile client meets it: raw TCP against
//! `pixq_web::server::serve` on 127.0.0.1, the embedded default behind it.
//!
//! - Headers sent slowly, or never, close the connection after the header time limit, and a
//!   kept-alive connection idle that long closes too.
//! - At the connection cap no more are served until one closes.
//! - An upload's body is not read before its URL checks out, never past its announced size,
//!   and not for longer than the upload time limit.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use pixq_jobs::backend::Connect;
use pixq_web::server::{ServeLimits, serve};
use pixq_web::{App, Signer, WebConfig};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower::ServiceExt;

/// Longest any step here may take before the test calls it hung (generous for slow
/// machines; nothing is timed against it).
const HUNG: Duration = Duration::from_secs(20);

struct Server {
    _dir: tempfile::TempDir,
    addr: std::net::SocketAddr,
    router: axum::Router,
    stop: tokio_util::sync::CancellationToken,
}

async fn server(limits: ServeLimits, tune: impl FnOnce(&mut WebConfig)) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let backend =
        pixq_jobs::backend::open(&Connect { home: dir.path().join("home"), ..Connect::default() }).await.unwrap();
    let mut cfg = WebConfig::new(Signer::new(b"test signing key, 16+ bytes").unwrap());
    tune(&mut cfg);
    let app: Arc<App> = App::new(&backend, cfg).unwrap();
    let router = pixq_web::router(app);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(serve(listener, router.clone(), limits, async move { s.cancelled().await }));
    Server { _dir: dir, addr, router, stop }
}

fn limits(header_timeout_ms: u64, max_connections: usize) -> ServeLimits {
    ServeLimits { header_timeout: Duration::from_millis(header_timeout_ms), max_connections, ..ServeLimits::default() }
}

/// Reads until the server closes the connection; what it sent.
async fn read_to_close(c: &mut TcpStream) -> String {
    let mut got = Vec::new();
    tokio::time::timeout(HUNG, c.read_to_end(&mut got)).await.expect("the server kept the connection open").ok();
    String::from_utf8_lossy(&got).into_owned()
}

/// Reads one response's head (up to the blank line), without waiting for the connection
/// to close.
async fn read_head(c: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(HUNG, c.read(&mut buf)).await.expect("no response").unwrap();
        assert!(n > 0, "closed before a response: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn headers_that_never_finish_and_idle_connections_are_closed() {
    let s = server(limits(300, 64), |_| {}).await;
    // Half a request line, then nothing.
    let mut slow = TcpStream::connect(s.addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    // Nothing at all.
    let mut silent = TcpStream::connect(s.addr).await.unwrap();
    // A kept-alive connection after one answered request.
    let mut idle = TcpStream::connect(s.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let head = read_head(&mut idle).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    for (name, c) in [("slow", &mut slow), ("silent", &mut silent), ("idle", &mut idle)] {
        let got = read_to_close(c).await;
        assert!(!got.contains("200 OK"), "{name}: {got}");
    }
    s.stop.cancel();
}

#[tokio::test]
async fn at_the_connection_cap_the_next_waits_for_one_to_close() {
    let s = server(limits(60_000, 1), |_| {}).await;
    let mut holder = TcpStream::connect(s.addr).await.unwrap();
    holder.write_all(b"GET /heal").await.unwrap();
    // Give the server time to accept the holder first.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut next = TcpStream::connect(s.addr).await.unwrap();
    next.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 64];
    let early = tokio::time::timeout(Duration::from_millis(700), next.read(&mut buf)).await;
    assert!(early.is_err(), "served while the only slot was taken: {early:?}");
    // The holder goes away: the slot is free, the next one is accepted and served.
    drop(holder);
    let response = read_to_close(&mut next).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    s.stop.cancel();
}

/// A batch of one announced file; its upload URL.
async fn upload_url(s: &Server, size: usize) -> String {
    let body = json!({"pipeline": "thumbnail:64", "files": [{"name": "a.jpg", "size": size, "type": "image/jpeg"}]});
    let req = Request::builder()
        .method("POST")
        .uri("/api/batches")
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let r = s.router.clone().oneshot(req).await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let v: Value = serde_json::from_slice(&r.into_body().collect().await.unwrap().to_bytes()).unwrap();
    v["uploads"][0]["url"].as_str().unwrap().to_string()
}

/// Sends an upload's head declaring `declared` bytes and the first `send` of them.
async fn start_upload(s: &Server, path: &str, declared: u64, send: usize) -> TcpStream {
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    let head = format!("PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {declared}\r\n\r\n");
    c.write_all(head.as_bytes()).await.unwrap();
    c.write_all(&vec![0xFFu8; send]).await.unwrap();
    c
}

#[tokio::test]
async fn an_upload_body_is_read_only_after_its_url_checks_out_and_only_as_announced() {
    let s = server(limits(5000, 64), |c| c.upload_timeout = Duration::from_millis(700)).await;
    let url = upload_url(&s, 1000).await;
    // Unsigned, tampered, unknown batch: refused with 50 MB declared and 10 bytes sent.
    let unsigned = url.split('?').next().unwrap().to_string();
    let tampered = url.replace("sig=", "sig=A");
    for path in [unsigned.as_str(), tampered.as_str(), "/api/uploads/b1/0?expires=9999999999&sig=x"] {
        let mut c = start_upload(&s, path, 50 << 20, 10).await;
        let head = read_head(&mut c).await;
        assert!(head.starts_with("HTTP/1.1 403") || head.starts_with("HTTP/1.1 404"), "{path}: {head}");
    }
    // Signed, announced as 1,000 bytes, declaring 50 MB: refused after 1,001 bytes.
    let mut c = start_upload(&s, &url, 50 << 20, 4096).await;
    let head = read_head(&mut c).await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    // Signed, the right size declared, the body stalling: the upload time limit ends it.
    let mut c = start_upload(&s, &url, 1000, 100).await;
    let head = read_head(&mut c).await;
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    s.stop.cancel();
}

/// Limits small enough to meet in a test; the header limit out of the way.
fn slow_client_limits() -> ServeLimits {
    ServeLimits {
        body_timeout: Duration::from_millis(500),
        upload_idle: Duration::from_millis(500),
        write_stall: Duration::from_millis(500),
        ..limits(60_000, 1)
    }
}

/// A client that announces a body and stops sending it: its request ends (an error, not a
/// wait) and its connection closes, so the one connection slot serves the next client.
#[tokio::test]
async fn a_body_that_stops_coming_ends_its_request_and_frees_the_slot() {
    let s = server(slow_client_limits(), |c| c.upload_timeout = Duration::from_secs(60)).await;
    let url = upload_url(&s, 5000).await;
    for (name, head, part) in [
        (
            "json",
            "POST /api/validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
                .to_string(),
            &b"{\"pipeline\": \"thumb"[..],
        ),
        // An upload has 60 s in all here, but no more than 0.5 s between two pieces.
        ("upload", format!("PUT {url} HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n"), &[0xFFu8; 100][..]),
    ] {
        let started = std::time::Instant::now();
        let mut c = TcpStream::connect(s.addr).await.unwrap();
        c.write_all(head.as_bytes()).await.unwrap();
        c.write_all(part).await.unwrap();
        let got = read_to_close(&mut c).await;
        assert!(!got.starts_with("HTTP/1.1 2"), "{name}: {got}");
        assert!(started.elapsed() < Duration::from_secs(30), "{name}: ended by the body limit, not the upload's");
        // The slot is free again.
        let mut next = TcpStream::connect(s.addr).await.unwrap();
        next.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        let response = read_to_close(&mut next).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{name}: {response}");
    }
    s.stop.cancel();
}

/// An upload that trickles (a few bytes every 200 ms, each piece well inside the idle
/// limit, but far under 16 KiB in it) is ended by the idle limit, not kept until its own
/// time limit with its share of the upload budget.
#[tokio::test]
async fn an_upload_that_trickles_is_ended_by_the_idle_limit() {
    let s = server(ServeLimits { max_connections: 4, ..slow_client_limits() }, |c| {
        c.upload_timeout = Duration::from_secs(60);
    })
    .await;
    let url = upload_url(&s, 5000).await;
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    c.write_all(format!("PUT {url} HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n").as_bytes()).await.unwrap();
    let started = std::time::Instant::now();
    let (mut rd, mut wr) = c.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if wr.write_all(&[0xFFu8; 20]).await.is_err() {
                return;
            }
        }
    });
    let mut got = Vec::new();
    tokio::time::timeout(HUNG, rd.read_to_end(&mut got)).await.expect("the trickle was kept").ok();
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 400"), "{got}");
    // 40 pieces would take 8 s: cut off well before, by the 0.5 s limit.
    assert!(started.elapsed() < Duration::from_secs(6), "{:?}", started.elapsed());
    trickle.abort();
    s.stop.cancel();
}

/// A reader that stops taking a response: the write fails after the stall limit (and the
/// connection with it); one that keeps taking it, however slowly, is not cut off.
#[tokio::test]
async fn a_response_nobody_reads_fails_after_the_stall_limit() {
    use pixq_web::server::StallLimit;
    let (server_end, mut client_end) = tokio::io::duplex(64);
    let mut w = StallLimit::new(server_end, Duration::from_millis(300));
    let started = std::time::Instant::now();
    let e = tokio::time::timeout(HUNG, w.write_all(&[7u8; 10_000])).await.unwrap().unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
    assert!(started.elapsed() >= Duration::from_millis(300));
    // A slow but steady reader: 64 bytes every 50 ms, each wait far under the limit.
    let (server_end, mut slow_end) = tokio::io::duplex(64);
    let mut w = StallLimit::new(server_end, Duration::from_secs(3));
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            match slow_end.read(&mut buf).await.unwrap() {
                0 => return got.len(),
                n => got.extend_from_slice(&buf[..n]),
            }
        }
    });
    w.write_all(&[7u8; 1_000]).await.unwrap();
    w.shutdown().await.unwrap();
    drop(w);
    assert_eq!(reader.await.unwrap(), 1_000);
    drop(client_end.read(&mut [0u8; 1]).await);
}

/// A reader that takes a few bytes before each stall limit passes no longer holds the
/// connection: it must take 16 KiB within each limit while the response waits for it.
#[tokio::test]
async fn a_response_read_a_trickle_at_a_time_fails_after_the_stall_limit() {
    use pixq_web::server::StallLimit;
    // Reads `chunk` bytes every 50 ms until the end; how many it got.
    let reader = |mut end: tokio::io::DuplexStream, chunk: usize| {
        tokio::spawn(async move {
            let mut got = 0;
            let mut buf = vec![0u8; chunk];
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                match end.read(&mut buf).await {
                    Ok(0) | Err(_) => return got,
                    Ok(n) => got += n,
                }
            }
        })
    };
    // 64 bytes every 50 ms, each wait far under the 600 ms limit: 1.3 KB/s.
    let (server_end, client_end) = tokio::io::duplex(64);
    let mut w = StallLimit::new(server_end, Duration::from_millis(600));
    let trickle = reader(client_end, 64);
    let started = std::time::Instant::now();
    let e = tokio::time::timeout(HUNG, w.write_all(&[7u8; 200_000])).await.unwrap().unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
    assert!(started.elapsed() >= Duration::from_millis(600));
    drop(w);
    assert!(trickle.await.unwrap() < 16 << 10);
    // 4 KiB every 50 ms (80 KiB/s) takes 16 KiB well within each limit (2 s here, ten
    // times what it needs): served whole.
    let (server_end, client_end) = tokio::io::duplex(4096);
    let mut w = StallLimit::new(server_end, Duration::from_secs(2));
    let steady = reader(client_end, 4096);
    w.write_all(&[7u8; 200_000]).await.unwrap();
    w.shutdown().await.unwrap();
    drop(w);
    assert_eq!(steady.await.unwrap(), 200_000);
}

/// An upload that waits for room in the upload budget longer than the time allowed between
/// two pieces of a body is not failed for it: the body's clocks start when the handler
/// first reads it (with `Expect: 100-continue` the client is told to send only then).
#[tokio::test]
async fn an_upload_waiting_for_room_is_not_timed_before_it_reads() {
    // 1 s between pieces: the first upload's pieces come every 200 ms (0.8 s to spare on a
    // slow machine), and it holds the budget about 3 s, well past that second.
    let limits = ServeLimits { max_connections: 4, upload_idle: Duration::from_secs(1), ..slow_client_limits() };
    let s = server(limits, |c| {
        c.upload_timeout = Duration::from_secs(60);
        c.upload_memory_mb = 1;
    })
    .await;
    let size = 600_000usize;
    let (first, second) = (upload_url(&s, size).await, upload_url(&s, size).await);
    // The first holds the whole budget for about 3 s, sending a piece every 200 ms.
    let mut a = TcpStream::connect(s.addr).await.unwrap();
    let head = format!("PUT {first} HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n");
    a.write_all(head.as_bytes()).await.unwrap();
    a.write_all(&[0xFFu8; 1000]).await.unwrap();
    let feeder = tokio::spawn(async move {
        // 16 KiB a piece: each alone is what an idle window asks for.
        for _ in 0..15 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            a.write_all(&[0xFFu8; 16 << 10]).await.unwrap();
        }
        a.write_all(&vec![0xFFu8; size - 1000 - 15 * (16 << 10)]).await.unwrap();
        read_to_close(&mut a).await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut b = TcpStream::connect(s.addr).await.unwrap();
    let head = format!(
        "PUT {second} HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
    );
    b.write_all(head.as_bytes()).await.unwrap();
    let cont = read_head(&mut b).await;
    assert!(cont.starts_with("HTTP/1.1 100"), "{cont}");
    b.write_all(&vec![0xFFu8; size]).await.unwrap();
    let got = read_to_close(&mut b).await;
    // The whole body was read and judged (not an image), not cut off as late.
    assert!(got.starts_with("HTTP/1.1 415"), "second: {got}");
    let first_got = feeder.await.unwrap();
    assert!(first_got.starts_with("HTTP/1.1 415"), "first: {first_got}");
    s.stop.cancel();
}

/// A server as `pixq serve` runs it on 127.0.0.1: the router behind the host guard.
async fn guarded(policy: pixq_web::guard::HostPolicy) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let backend =
        pixq_jobs::backend::open(&Connect { home: dir.path().join("home"), ..Connect::default() }).await.unwrap();
    let app: Arc<App> =
        App::new(&backend, WebConfig::new(Signer::new(b"test signing key, 16+ bytes").unwrap())).unwrap();
    let router = pixq_web::guard::layer(pixq_web::router(app), policy);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(serve(listener, router.clone(), ServeLimits::default(), async move { s.cancelled().await }));
    Server { _dir: dir, addr, router, stop }
}

/// Sends `request` whole on a new connection; the status code and the whole response.
async fn exchange(addr: std::net::SocketAddr, request: &str) -> (u16, String) {
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(request.as_bytes()).await.unwrap();
    let got = read_to_close(&mut c).await;
    let code = got.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("no status: {got:?}"));
    (code, got)
}

fn get(path: &str, host: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
}

fn create_batch(host: &str, extra: &str) -> String {
    let body =
        json!({"pipeline": "thumbnail:64", "files": [{"name": "a.jpg", "size": 10, "type": "image/jpeg"}]}).to_string();
    format!(
        "POST /api/batches HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn a_loopback_server_answers_only_its_own_names_and_no_cross_site_write() {
    let s = guarded(pixq_web::guard::HostPolicy::allowing(&["pixq.example".into()]).unwrap()).await;
    let port = s.addr.port();
    let here = format!("127.0.0.1:{port}");
    // DNS rebinding: the page's own name arrives as the host.
    for host in [format!("evil.example:{port}"), "evil.example".into(), format!("localhost.evil.example:{port}")] {
        let (code, got) = exchange(s.addr, &get("/healthz", &host)).await;
        assert_eq!(code, 421, "{host}: {got}");
        assert!(got.contains("--allow-host"), "{got}");
    }
    // An absolute-form target names the host too, whatever Host says.
    let (code, got) = exchange(
        s.addr,
        &format!("GET http://evil.example:{port}/healthz HTTP/1.1\r\nHost: {here}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(code, 421, "{got}");
    // No host at all (HTTP/1.0).
    let (code, got) = exchange(s.addr, "GET /healthz HTTP/1.0\r\n\r\n").await;
    assert_eq!(code, 421, "{got}");
    for host in [here.clone(), format!("localhost:{port}"), format!("[::1]:{port}"), "pixq.example".into()] {
        let (code, got) = exchange(s.addr, &get("/healthz", &host)).await;
        assert_eq!(code, 200, "{host}: {got}");
    }
    // Writes from a page of another site (a form, or a fetch it cannot read) are refused;
    // reads are not (image URLs are embedded anywhere).
    for extra in [
        "Origin: http://evil.example\r\n".to_string(),
        format!("Origin: http://127.0.0.1:{}\r\n", port.wrapping_add(1)),
        "Origin: null\r\n".into(),
        "Sec-Fetch-Site: cross-site\r\n".into(),
    ] {
        let (code, got) = exchange(s.addr, &create_batch(&here, &extra)).await;
        assert_eq!(code, 403, "{extra}: {got}");
    }
    let (code, got) =
        exchange(s.addr, &get("/api/ops", &here).replace("Connection", "Origin: http://evil.example\r\nConnection"))
            .await;
    assert_eq!(code, 200, "{got}");
    // The page itself, and tools that send no Origin, create batches.
    for extra in [format!("Origin: http://{here}\r\nSec-Fetch-Site: same-origin\r\n"), String::new()] {
        let (code, got) = exchange(s.addr, &create_batch(&here, &extra)).await;
        assert_eq!(code, 201, "{extra}: {got}");
    }
    s.stop.cancel();
}

/// One address cannot hold all the connections: past its share its next one is closed at
/// once, and served again once one of its own closes. (Loopback is counted here; by
/// default it is not, for a reverse proxy on the same machine.)
#[tokio::test]
async fn one_address_gets_its_share_of_connections_and_no_more() {
    let limits = ServeLimits { max_per_peer: 2, limit_loopback: true, ..limits(60_000, 64) };
    let s = server(limits, |_| {}).await;
    let mut holders = Vec::new();
    for _ in 0..2 {
        let mut c = TcpStream::connect(s.addr).await.unwrap();
        c.write_all(b"GET /heal").await.unwrap();
        holders.push(c);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = TcpStream::connect(s.addr).await.unwrap();
    let _ = third.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    let got = read_to_close(&mut third).await;
    assert!(got.is_empty(), "a third connection from one address was served: {got}");
    // Once the server has seen one of its own close, the address is served again.
    drop(holders.pop());
    let started = std::time::Instant::now();
    loop {
        let mut c = TcpStream::connect(s.addr).await.unwrap();
        let _ = c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        let got = read_to_close(&mut c).await;
        if got.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(got.is_empty(), "{got}");
        assert!(started.elapsed() < HUNG, "not served again after one of its connections closed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.stop.cancel();
    // Not counting loopback (the default), a third is served.
    let s = server(ServeLimits { max_per_peer: 2, ..ServeLimits::default() }, |_| {}).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = TcpStream::connect(s.addr).await.unwrap();
        c.write_all(b"GET /heal").await.unwrap();
        held.push(c);
    }
    let (code, got) = exchange(s.addr, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert_eq!(code, 200, "{got}");
    s.stop.cancel();
}
